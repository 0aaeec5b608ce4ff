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
from idcode.replay import ReplayState
from idcode.scenes import (
    Decision,
    History,
    Scan,
    SceneAdapter,
    SceneContext,
    SceneError,
    decode_scene_key,
)
from idcode.verifier import DEFAULT_CLOCK_SKEW, verify

log = logging.getLogger("idcode.decider")

#: The reason of a decision whose adapter raised: the gate stays shut (fail closed).
ADAPTER_ERROR = "adapter_error"


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
    ) -> None:
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
        )
        self.adapter = adapter(self.context)

    def decide(self, text: str, now: int, history: History) -> tuple[Scan, Decision]:
        """Verify ``text`` at ``now`` and apply the scene's policy. Never raises for bad input:
        an adapter defect denies with ``adapter_error``."""
        verdict = verify(text, self.context.trust, now, self.replay)
        card = verdict.claims.card if verdict.claims is not None else None
        subject = self.context.subject(card.pseudonym) if card is not None else None
        scan = Scan(text, verdict, now, subject)
        try:
            decision = self.adapter.decide(scan, history)
        except Exception:  # fail closed: a policy defect keeps the gate shut, never crashes it
            log.exception("the %s adapter failed; denying", self.adapter.scene)
            decision = Decision.deny(ADAPTER_ERROR)
        return scan, decision
