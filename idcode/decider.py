"""From a scanned text to a scene decision: the offline verifier, then the scene adapter.

The terminal runtime and the test helpers share this, so what a test decides is what a gate
decides. It does no I/O: the caller passes the time, the replay state and the history, and
journals the decision before acting on it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from idcode.bundle import TrustBundle
from idcode.cose import Algorithm
from idcode.errors import SceneError
from idcode.reasons import Reason
from idcode.replay import ReplayState
from idcode.scenes import (
    ADAPTER_ERROR,
    UNDECLARED_REASON,
    Decision,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    decode_scene_key,
)
from idcode.verifier import DEFAULT_CLOCK_SKEW, verify

log = logging.getLogger("idcode.decider")

__all__ = ["ADAPTER_ERROR", "UNDECLARED_REASON", "Decider"]
_OK = Reason.OK.value  # read once: an enum member's value is a property call


class Decider:
    """Decisions of one scene adapter over one trust bundle."""

    def __init__(
        self,
        bundle: TrustBundle,
        adapter: type[SceneAdapter],
        *,
        prefix: str,
        replay: ReplayState,
        algorithms: Iterable[Algorithm] = (Algorithm.EDDSA,),
        clock_skew: int = DEFAULT_CLOCK_SKEW,
        options: Mapping[str, str] | None = None,
        strict: bool = False,
    ) -> None:
        """``strict`` raises SceneError where a terminal would deny with ``adapter_error`` or
        ``undeclared_reason``: the test helpers use it so an adapter's defect fails its test."""
        scene = bundle.scene
        if scene.get("scene") != adapter.scene:
            raise SceneError(
                f"the trust bundle is for scene {str(scene.get('scene'))[:20]!r}, "
                f"this adapter is for {adapter.scene!r}"
            )
        data = adapter.parse_data(scene.get("data") or {})
        self.bundle = bundle
        self.replay = replay
        self.context = SceneContext(
            scene=adapter.scene,
            site=str(scene.get("site", "")),
            data=data,
            subject_key=decode_scene_key(scene.get("subject_key")),
            trust=bundle.trust(
                prefix=prefix,
                algorithms=algorithms,
                clock_skew=clock_skew,
                allow_stale=data.allow_stale,
            ),
            options=MappingProxyType(dict(options or {})),
            hash_name=bundle.profile.hash_name,
        )
        self.adapter = adapter(self.context)
        self.known_reasons = adapter.known_reasons()
        self.strict = strict

    def decide(self, text: str, now: int, history: History) -> tuple[Scan, Decision]:
        """Verify ``text`` at ``now`` and apply the scene's policy. Never raises for bad input:
        an adapter that raises denies with ``adapter_error``, one that answers a reason
        outside its scene's closed set (or admits with another reason than ``ok``) denies
        with ``undeclared_reason``, so the journal only ever holds what the service accepts."""
        verdict = verify(text, self.context.trust, now, self.replay)
        card = verdict.claims.card if verdict.claims is not None else None
        subject = self.context.subject(card.pseudonym) if card is not None else None
        scan = Scan(text, verdict, now, subject)
        try:
            decision = self.adapter.decide(scan, history)
        except Exception as exc:  # fail closed: a policy defect keeps the gate shut
            if self.strict:
                raise SceneError(f"the {self.adapter.scene} adapter raised {exc!r}") from exc
            log.exception("the %s adapter failed; denying", self.adapter.scene)
            decision = Decision.deny(ADAPTER_ERROR)
        if decision.reason not in self.known_reasons or decision.admitted != (
            decision.reason == _OK
        ):
            if self.strict:
                raise SceneError(
                    f"the {self.adapter.scene} adapter answered "
                    f"{'an admission' if decision.admitted else 'a denial'} with reason "
                    f"{decision.reason[:48]!r}: its closed set is {sorted(self.known_reasons)} "
                    "(declare scene reasons in the adapter's 'reasons'; admissions are 'ok')"
                )
            log.error(
                "the %s adapter answered %s with reason %r, outside its closed set %s; denying",
                self.adapter.scene,
                "an admission" if decision.admitted else "a denial",
                decision.reason[:48],
                sorted(self.known_reasons),
            )
            decision = Decision.deny(UNDECLARED_REASON, subject=decision.subject)
        return scan, decision
