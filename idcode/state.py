"""State the service's processes share: rate limits, online replay detection, card cache.

``RedisState`` is what several replicas use: every key lives under the configured prefix,
and each operation is atomic in Redis, so two processes behave as one service.
``MemoryState`` is the fallback when no Redis URL is set: correct for a single process
only, since every process would count and remember on its own.

Cached cards carry their version (bumped by every status change); a cache write never
replaces a newer version with an older one, so a request that read the database just before
a status change cannot put the old status back into the cache.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis

from idcode.cards import SNAPSHOT_LIFETIME, CardSnapshot
from idcode.replay import ReplayCache

CARD_CACHE_SECONDS = SNAPSHOT_LIFETIME
RATE_WINDOW_SECONDS = 60

# KEYS[1] card key, KEYS[2] this minute's rate counter; ARGV[1] the limit (0: none), ARGV[2]
# the counter's TTL. One script instead of a pipeline: about a third less client overhead.
_ADMIT = """
local card = redis.call('GET', KEYS[1])
local count = 0
if tonumber(ARGV[1]) > 0 then
  count = redis.call('INCR', KEYS[2])
  if count == 1 then
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
end
return {card, count}
"""

# KEYS[1] card key; ARGV: snapshot JSON, its version, TTL seconds.
_CACHE_IF_NOT_OLDER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and tonumber(cached['version']) and tonumber(cached['version']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class SharedState(Protocol):
    kind: str

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        """Count one code request of ``citizen`` (its ID number's keyed hash) in the current
        minute and return its cached card (or None) and, when it is over ``limit`` (0: no
        limit), the seconds to wait. One round trip."""
        ...

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        """Record a verified code id until ``forget_after``; True if it was recorded."""
        ...

    async def cache_card(self, citizen: bytes, card: CardSnapshot, now: int) -> None:
        """Cache ``card`` unless a newer version of it is cached already."""
        ...

    async def ping(self) -> None:
        """Raise if the state cannot be reached."""
        ...

    async def close(self) -> None: ...


def _card_ttl(card: CardSnapshot, now: int) -> int:
    return max(1, min(CARD_CACHE_SECONDS, card.valid_until - now))


def _wait(count: int, limit: int, window: int, now: float) -> int | None:
    if limit and count > limit:
        return max(1, (window + 1) * RATE_WINDOW_SECONDS - int(now))
    return None


class RedisState:
    kind = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._cache_if_not_older = self._redis.register_script(_CACHE_IF_NOT_OLDER)
        self._admit = self._redis.register_script(_ADMIT)
        # The same cached JSON comes back on every request of a citizen: parse it once.
        self._parsed: dict[bytes, CardSnapshot] = {}

    def _card_key(self, citizen: bytes) -> str:
        return f"{self._prefix}card:{citizen.hex()}"

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        window = int(now // RATE_WINDOW_SECONDS)
        rate_key = f"{self._prefix}rate:{citizen.hex()[:32]}:{window}"
        raw_card, count = await self._admit(
            keys=[self._card_key(citizen), rate_key], args=[limit, 2 * RATE_WINDOW_SECONDS]
        )
        card = None
        if raw_card:  # a missing key comes back as nil, i.e. None
            cached = self._parsed.get(raw_card)
            if cached is None:
                cached = CardSnapshot.from_json(json.loads(raw_card))
                if len(self._parsed) >= 10_000:
                    self._parsed.clear()
                self._parsed[raw_card] = cached
            card = cached if cached.valid_until > now else None
        return card, _wait(int(count), limit, window, now)

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        key = f"{self._prefix}seen:{code_id.hex()}"
        fresh = await self._redis.set(key, b"1", nx=True, exat=max(forget_after, now + 1))
        return not fresh

    async def cache_card(self, citizen: bytes, card: CardSnapshot, now: int) -> None:
        await self._cache_if_not_older(
            keys=[self._card_key(citizen)],
            args=[json.dumps(card.to_json()), card.version, _card_ttl(card, now)],
        )

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryState:
    """Single-process state. Not for several replicas: each would keep its own counts."""

    kind = "memory"

    def __init__(self, max_cards: int = 100_000) -> None:
        self._rates: dict[tuple[bytes, int], int] = {}
        self._replay = ReplayCache()
        self._cards: OrderedDict[bytes, tuple[CardSnapshot, int]] = OrderedDict()
        self._max_cards = max_cards

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        entry = self._cards.get(citizen)
        card = entry[0] if entry is not None and entry[1] > now else None
        if not limit:
            return card, None
        window = int(now // RATE_WINDOW_SECONDS)
        if len(self._rates) > 100_000:
            self._rates = {k: v for k, v in self._rates.items() if k[1] >= window}
        count = self._rates.get((citizen, window), 0) + 1
        self._rates[(citizen, window)] = count
        return card, _wait(count, limit, window, now)

    async def seen_before(self, code_id: bytes, forget_after: int, now: int) -> bool:
        return self._replay.check_and_record(code_id, forget_after, now)

    async def cache_card(self, citizen: bytes, card: CardSnapshot, now: int) -> None:
        entry = self._cards.get(citizen)
        if entry is not None and entry[0].version > card.version:
            return
        self._cards[citizen] = (card, now + _card_ttl(card, now))
        self._cards.move_to_end(citizen)
        while len(self._cards) > self._max_cards:
            self._cards.popitem(last=False)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_state(redis_url: str | None, prefix: str) -> SharedState:
    return RedisState(redis_url, prefix) if redis_url else MemoryState()
