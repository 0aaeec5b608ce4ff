"""Replay detection: remember the code ids a verifier has accepted until the codes expire.

A code can only be replayed while it is still within its validity window, so an entry is
kept until ``exp + skew`` and no longer; the cache is therefore sized by the validity window
times the scan rate, with a hard cap as a last resort.
"""

from __future__ import annotations

import heapq
from typing import Protocol


class ReplayState(Protocol):
    """What the verifier needs from replay state; Redis implements it for the service."""

    def check_and_record(self, code_id: bytes, forget_after: int, now: int) -> bool:
        """Record ``code_id`` until ``forget_after``; True if it was already recorded."""
        ...


class ReplayCache:
    """In-process replay state for one terminal or one service process.

    ``capacity`` caps the number of live entries. When the cap is hit, the entry that would
    expire first is dropped and ``evictions`` counts it: a replay of that code inside its
    remaining lifetime would then go unnoticed, so size the cap above the busiest
    validity window (scans per second x (code lifetime + 2 x skew)).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.evictions = 0
        self._expiry: dict[bytes, int] = {}
        self._queue: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, code_id: object) -> bool:
        return code_id in self._expiry

    def check_and_record(self, code_id: bytes, forget_after: int, now: int) -> bool:
        self._forget_expired(now)
        if code_id in self._expiry:
            return True
        if len(self._expiry) >= self.capacity:
            _, oldest = heapq.heappop(self._queue)
            del self._expiry[oldest]
            self.evictions += 1
        self._expiry[code_id] = forget_after
        heapq.heappush(self._queue, (forget_after, code_id))
        return False

    def _forget_expired(self, now: int) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, code_id = heapq.heappop(queue)
            del self._expiry[code_id]
