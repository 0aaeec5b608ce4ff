"""State the service's processes share: rate limits, online replay detection, card cache.

``RedisState`` is what several replicas use: every key lives under the configured prefix,
and each operation is atomic in Redis, so two processes behave as one service.
``MemoryState`` is the fallback when no Redis URL is set: correct for a single process
only, since every process would count and remember on its own.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis

from idcode.cards import CardSnapshot
from idcode.replay import ReplayCache

CARD_CACHE_SECONDS = 300


class SharedState(Protocol):
    kind: str

    async def rate_limited(self, subject: str, limit: int, now: float) -> int | None:
        """Count one request of ``subject`` in the current minute; the seconds to wait
        when it is over ``limit``, else None."""
        ...

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        """Record a verified code id until ``forget_after``; True if it was recorded."""
        ...

    async def cached_card(self, id_hash: bytes, now: int) -> CardSnapshot | None: ...

    async def cache_card(self, id_hash: bytes, card: CardSnapshot, now: int) -> None: ...

    async def forget_card(self, id_hash: bytes) -> None: ...

    async def ping(self) -> None:
        """Raise if the state cannot be reached."""
        ...

    async def close(self) -> None: ...


def _card_ttl(card: CardSnapshot, now: int) -> int:
    return max(1, min(CARD_CACHE_SECONDS, card.valid_until - now))


class RedisState:
    kind = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        self._prefix = prefix

    async def rate_limited(self, subject: str, limit: int, now: float) -> int | None:
        window = int(now // 60)
        key = f"{self._prefix}rate:{subject}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if count > limit:
            return max(1, (window + 1) * 60 - int(now))
        return None

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        key = f"{self._prefix}seen:{code_id.hex()}"
        fresh = await self._redis.set(key, b"1", nx=True, exat=max(forget_after, now + 1))
        return not fresh

    async def cached_card(self, id_hash: bytes, now: int) -> CardSnapshot | None:
        raw = await self._redis.get(f"{self._prefix}card:{id_hash.hex()}")
        if raw is None:
            return None
        card = CardSnapshot.from_json(json.loads(raw))
        return card if card.valid_until > now else None

    async def cache_card(self, id_hash: bytes, card: CardSnapshot, now: int) -> None:
        await self._redis.set(
            f"{self._prefix}card:{id_hash.hex()}",
            json.dumps(card.to_json()),
            ex=_card_ttl(card, now),
        )

    async def forget_card(self, id_hash: bytes) -> None:
        await self._redis.delete(f"{self._prefix}card:{id_hash.hex()}")

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryState:
    """Single-process state. Not for several replicas: each would keep its own counts."""

    kind = "memory"

    def __init__(self, max_cards: int = 100_000) -> None:
        self._rates: dict[tuple[str, int], int] = {}
        self._replay = ReplayCache()
        self._cards: OrderedDict[bytes, tuple[CardSnapshot, int]] = OrderedDict()
        self._max_cards = max_cards

    async def rate_limited(self, subject: str, limit: int, now: float) -> int | None:
        window = int(now // 60)
        if len(self._rates) > 100_000:
            self._rates = {k: v for k, v in self._rates.items() if k[1] >= window}
        count = self._rates.get((subject, window), 0) + 1
        self._rates[(subject, window)] = count
        if count > limit:
            return max(1, (window + 1) * 60 - int(now))
        return None

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        return self._replay.check_and_record(code_id, forget_after, now)

    async def cached_card(self, id_hash: bytes, now: int) -> CardSnapshot | None:
        entry = self._cards.get(id_hash)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    async def cache_card(self, id_hash: bytes, card: CardSnapshot, now: int) -> None:
        self._cards[id_hash] = (card, now + _card_ttl(card, now))
        self._cards.move_to_end(id_hash)
        while len(self._cards) > self._max_cards:
            self._cards.popitem(last=False)

    async def forget_card(self, id_hash: bytes) -> None:
        self._cards.pop(id_hash, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_state(redis_url: str | None, prefix: str) -> SharedState:
    return RedisState(redis_url, prefix) if redis_url else MemoryState()


def monotonic() -> float:
    return time.monotonic()
