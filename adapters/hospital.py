"""Hospital self-service kiosks (居民健康): recognise offline a citizen whom the hospital's
registration desk has linked to a patient record, by the hospital's own pairwise subject."""

from __future__ import annotations

from typing import ClassVar

from idcode.claims import Card
from idcode.scenes import Decision, History, Scan, SceneAdapter, SceneContext, SceneData

CHECK_IN = "check_in"
#: The citizen is not (yet) linked to a patient record here: the kiosk sends them to the
#: registration desk.
NOT_REGISTERED = "not_registered"


class Adapter(SceneAdapter):
    """A hospital's self-service kiosk. Its trust bundle carries the hospital's subject key
    (a relying party's key, not a scene key), so the subject of a scan is the one the desk
    got from ``POST /v1/identify``; a citizen whose subject the hospital linked checks in.

    The result says only whether the citizen is linked: the kiosk's own software maps the
    subject to the patient record in the hospital's system, so no patient number, name or
    other personal data ever enters the journal or the upload.
    """

    scene: ClassVar[str] = "hospital"
    # The kiosk needs nothing beyond what every scene's data has: linked_subjects.
    Data: ClassVar[type[SceneData]] = SceneData
    reasons: ClassVar[tuple[str, ...]] = (NOT_REGISTERED,)
    actions: ClassVar[tuple[str, ...]] = (CHECK_IN,)

    def __init__(self, context: SceneContext) -> None:
        super().__init__(context)
        self.linked = context.data.linked_subjects

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        if subject not in self.linked:
            return Decision.deny(NOT_REGISTERED, CHECK_IN, linked=False)
        # A second check-in the same day is admitted too (docs/scenes/hospital.md): the kiosk
        # grants nothing that runs out, and a patient often has several appointments a day.
        return Decision.admit(CHECK_IN, linked=True)
