"""Codes issued per hour, counted by every replica and added up in the shared state.

Issuance writes nothing to the database (it is the hot path), so a count of codes issued
that every replica contributes to is kept apart: each process counts in memory (a dictionary
increment per code) and adds its counts to the shared state every ``FLUSH_SECONDS``
(``SharedState.add_issued``: Redis, or the process's own memory without Redis). The operator
console charts the sum (docs/console.md). While Redis cannot be reached the counts stay here
and are added at a later flush; only a process that stops while Redis is away loses its
last counts. Prometheus counts the same per process for alerting (item 1 of issue 15).
"""

from __future__ import annotations

import asyncio
import logging

from idcode.service.redistopology import STATE_ERRORS
from idcode.service.state import ISSUED_KEPT_SECONDS, SharedState

log = logging.getLogger("idcode.service.issuedtally")
HOUR = 3600
FLUSH_SECONDS = 10.0


class IssuedTally:
    """This process's codes issued per hour (hours since the epoch) not yet flushed. Used on
    the event loop only, so a dictionary needs no lock."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def add(self, now: float) -> None:
        hour = int(now // HOUR)
        self._counts[hour] = self._counts.get(hour, 0) + 1

    def pending(self) -> dict[int, int]:
        return dict(self._counts)

    async def flush(self, state: SharedState) -> None:
        counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            await state.add_issued(counts)
        except STATE_ERRORS as exc:
            for hour, count in counts.items():
                self._counts[hour] = self._counts.get(hour, 0) + count
            newest = max(self._counts)
            self._counts = {
                hour: n
                for hour, n in self._counts.items()
                if hour > newest - ISSUED_KEPT_SECONDS // HOUR
            }
            log.debug("codes issued kept for the next flush (%s)", type(exc).__name__)

    async def flush_every(self, state: SharedState, seconds: float = FLUSH_SECONDS) -> None:
        """Flush until cancelled (the application's lifespan runs it)."""
        while True:
            await asyncio.sleep(seconds)
            await self.flush(state)
