"""State the service's processes share: rate limits, online replay detection, card cache.

``RedisState`` is what several replicas use: every key lives under the configured prefix,
and each operation is atomic in Redis, so two processes behave as one service. The Redis is
one server, a Redis Cluster or a master watched by Sentinel (``redistopology``).
``MemoryState`` is the fallback when no Redis URL is set: correct for a single process
only, since every process would count and remember on its own. ``FailoverState`` wraps
Redis for the service: while Redis cannot be reached it runs *degraded* on per-process
state (docs/data.md, "When Redis is down") and goes back to Redis by itself.

Cached cards carry their version (bumped by every status change); a cache write never
replaces a newer version with an older one, so a request that read the database just before
a status change cannot put the old status back into the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from idcode.replay import ReplayCache
from idcode.service import metrics
from idcode.service.cards import SNAPSHOT_LIFETIME, CardSnapshot
from idcode.service.redistopology import STATE_ERRORS, TIMEOUT_SECONDS, async_client, parse

log = logging.getLogger("idcode.service.state")

CARD_CACHE_SECONDS = SNAPSHOT_LIFETIME
RATE_WINDOW_SECONDS = 60
#: While degraded, Redis is tried again this often (one request tries; the others do not
#: wait for it), so the service is back on Redis within about a second of its return.
RETRY_SECONDS = 1.0
REDIS_CONNECTIONS = 100  # per process (per node of a cluster)
#: How long the hourly counts of codes issued are kept (the console charts the last 24 h).
ISSUED_KEPT_SECONDS = 48 * 3600
MAX_UNWRITTEN = 100_000  # status changes kept for Redis during one outage (beyond: dropped
# from memory, still covered by forget_cards on recovery)
T = TypeVar("T")

# KEYS[1] card key, KEYS[2] this minute's rate counter (one hash tag, so one cluster slot:
# RedisState._card_key, _rate_key); ARGV[1] the limit (0: none), ARGV[2]
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

    @property
    def degraded(self) -> bool:
        """True while the shared state is unreachable and this process runs on its own."""
        ...

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        """Count one code request of ``citizen`` (its ID number's keyed hash) in the current
        minute and return its cached card (or None) and, when it is over ``limit`` (0: no
        limit), the seconds to wait. One round trip."""
        ...

    async def seen_before(
        self, code_id: bytes, forget_after: int, now: int, *, shared_only: bool = False
    ) -> bool:
        """Record a verified code id until ``forget_after``; True if it was recorded.
        ``shared_only``: raise RedisError rather than answer from this process's memory."""
        ...

    async def cache_card(
        self, citizen: bytes, card: CardSnapshot, now: int, *, write_through: bool = False
    ) -> None:
        """Cache ``card`` unless a newer version of it is cached already. ``write_through``:
        a status change every replica must see (kept and written later if Redis is down)."""
        ...

    async def add_issued(self, counts: dict[int, int]) -> None:
        """Add to the codes issued per hour (``counts``: hours since the epoch to codes), the
        tally every replica adds to (issuedtally.py). Raises RedisError when it cannot."""
        ...

    async def issued(self, hours: list[int]) -> list[int]:
        """The codes issued in each of ``hours``, as every replica's flushes added them up."""
        ...

    async def ping(self) -> None:
        """Raise if the state cannot be reached."""
        ...

    async def close(self) -> None: ...


def _card_ttl(card: CardSnapshot, now: int) -> int:
    ttl = max(1, min(CARD_CACHE_SECONDS, card.valid_until - now))
    # Up to a fifth shorter, at random: cards cached in one burst (after a restart or a
    # Redis recovery) do not all expire in the same second and come back to the database
    # together (bench/README.md, soak.py).
    return max(1, ttl - random.randrange(ttl // 5 + 1))


def _wait(count: int, limit: int, window: int, now: float) -> int | None:
    if limit and count > limit:
        return max(1, (window + 1) * RATE_WINDOW_SECONDS - int(now))
    return None


class RedisState:
    kind = "redis"
    degraded = False

    def __init__(self, url: str, prefix: str) -> None:
        # A bounded pool on which a request beyond its connections waits for a free one (up
        # to the same 2 s) instead of failing, which FailoverState would take for Redis being
        # down (issuance collapsed above 100 concurrent requests; bench/README.md, soak.py).
        # One server's pool blocks by itself; the cluster's and the sentinel master's refuse,
        # so there a semaphore makes commands wait their turn.
        topology = parse(url)
        self._redis, self._sentinels = async_client(topology, REDIS_CONNECTIONS)
        self._turns = asyncio.Semaphore(REDIS_CONNECTIONS) if topology.mode != "single" else None
        self._prefix = prefix
        self._cache_if_not_older = self._redis.register_script(_CACHE_IF_NOT_OLDER)
        self._admit = self._redis.register_script(_ADMIT)
        # The same cached JSON comes back on every request of a citizen: parse it once.
        self._parsed: dict[bytes, CardSnapshot] = {}

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._turns is None:
            yield
            return
        # TimeoutError is an OSError: taken for Redis being unreachable, as the pool's own.
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await self._turns.acquire()
        try:
            yield
        finally:
            self._turns.release()

    # Every key of one citizen carries the citizen's hash as its hash tag ({...}): a Redis
    # Cluster keeps them in one slot, so the admit script may use them together.
    def _card_key(self, citizen: bytes) -> str:
        return f"{self._prefix}card:{{{citizen.hex()}}}"

    def _untagged_card_key(self, citizen: bytes) -> str:
        """The card key of versions before the hash tag (docs/data.md, "Upgrading from a
        version whose card and rate keys had no hash tag"): a status change removes it, so
        replicas of that version still running read the new status from the database."""
        return f"{self._prefix}card:{citizen.hex()}"

    def _rate_key(self, citizen: bytes, window: int) -> str:
        return f"{self._prefix}rate:{{{citizen.hex()}}}:{window}"

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        window = int(now // RATE_WINDOW_SECONDS)
        async with self._turn():
            raw_card, count = await self._admit(
                keys=[self._card_key(citizen), self._rate_key(citizen, window)],
                args=[limit, 2 * RATE_WINDOW_SECONDS],
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

    async def seen_before(
        self, code_id: bytes, forget_after: int, now: int, *, shared_only: bool = False
    ) -> bool:
        key = f"{self._prefix}seen:{code_id.hex()}"
        async with self._turn():
            fresh = await self._redis.set(key, b"1", nx=True, exat=max(forget_after, now + 1))
        return not fresh

    async def cache_card(
        self, citizen: bytes, card: CardSnapshot, now: int, *, write_through: bool = False
    ) -> None:
        async with self._turn():
            await self._cache_if_not_older(
                keys=[self._card_key(citizen)],
                args=[json.dumps(card.to_json()), card.version, _card_ttl(card, now)],
            )
            if write_through:  # another slot than the card key's: a command of its own
                await self._redis.unlink(self._untagged_card_key(citizen))

    # The hours' keys are in different cluster slots: a pipeline that is no transaction (a
    # cluster client sends each node its part), and a pipeline of GETs rather than one MGET.
    async def add_issued(self, counts: dict[int, int]) -> None:
        async with self._turn(), self._redis.pipeline(transaction=False) as pipe:
            for hour, count in counts.items():
                key = f"{self._prefix}issued:{hour}"
                pipe.incrby(key, count)
                pipe.expire(key, ISSUED_KEPT_SECONDS)
            await pipe.execute()

    async def issued(self, hours: list[int]) -> list[int]:
        async with self._turn(), self._redis.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.get(f"{self._prefix}issued:{hour}")
            values = await pipe.execute()
        return [int(value) if value else 0 for value in values]

    async def ping(self) -> None:
        """One server, the sentinels' master, or every master of a cluster (each holds some
        citizens' keys, so one that is away leaves some requests without shared state)."""
        async with self._turn():
            if isinstance(self._redis, RedisCluster):
                await self._redis.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    async def forget_cards(self) -> int:
        """Drop every cached card (after an outage: status changes made meanwhile could not
        be written through). Returns how many were dropped."""
        # A cluster client's SCAN visits every master, and its UNLINK sends each slot's keys
        # to the slot's node.
        dropped = 0
        batch: list[bytes] = []
        async with self._turn():
            async for key in self._redis.scan_iter(match=f"{self._prefix}card:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    dropped += await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                dropped += await self._redis.unlink(*batch)
        return dropped


class MemoryState:
    """Single-process state. Not for several replicas: each would keep its own counts."""

    kind = "memory"
    degraded = False

    def __init__(self, max_cards: int = 100_000) -> None:
        self._rates: dict[tuple[bytes, int], int] = {}
        self._replay = ReplayCache()
        self._cards: OrderedDict[bytes, tuple[CardSnapshot, int]] = OrderedDict()
        self._max_cards = max_cards
        self._issued: dict[int, int] = {}

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

    async def seen_before(
        self, code_id: bytes, forget_after: int, now: int, *, shared_only: bool = False
    ) -> bool:
        return self._replay.check_and_record(code_id, forget_after, now)

    async def cache_card(
        self, citizen: bytes, card: CardSnapshot, now: int, *, write_through: bool = False
    ) -> None:
        entry = self._cards.get(citizen)
        if entry is not None and entry[0].version > card.version:
            return
        self._cards[citizen] = (card, now + _card_ttl(card, now))
        self._cards.move_to_end(citizen)
        while len(self._cards) > self._max_cards:
            self._cards.popitem(last=False)

    async def add_issued(self, counts: dict[int, int]) -> None:
        for hour, count in counts.items():
            self._issued[hour] = self._issued.get(hour, 0) + count
        oldest = max(self._issued) - ISSUED_KEPT_SECONDS // 3600
        self._issued = {hour: n for hour, n in self._issued.items() if hour >= oldest}

    async def issued(self, hours: list[int]) -> list[int]:
        return [self._issued.get(hour, 0) for hour in hours]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class FailoverState:
    """Redis while it answers; per-process state while it does not.

    Degraded, the process counts rate limits on its own (so across N replicas a citizen may
    get up to N times the limit), remembers replays on its own, and caches no cards at all:
    every code request reads its card from the database, so no replica can serve a status
    that another one changed meanwhile. A status change whose write-through failed is
    written again when Redis is back, after every cached card has been dropped (a change
    made on a replica that has since restarted is covered by the drop).
    """

    kind = "redis"

    def __init__(self, redis: RedisState, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._local = MemoryState(max_cards=1)
        self._clock = clock
        self._retry_at: float | None = None  # degraded until this (monotonic) time
        self._unwritten: dict[bytes, CardSnapshot] = {}

    @property
    def degraded(self) -> bool:
        return self._retry_at is not None

    async def _try(
        self, operation: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self._retry_at is not None and self._clock() < self._retry_at:
            return await fallback()
        try:
            result = await operation()
        except STATE_ERRORS as exc:
            if self._retry_at is None:
                log.error(
                    "Redis unreachable (%s): degraded to per-process state", type(exc).__name__
                )
                metrics.state_degraded(True)
            self._retry_at = self._clock() + RETRY_SECONDS
            return await fallback()
        if self._retry_at is not None:
            await self._recover()
        return result

    async def _recover(self) -> None:
        try:
            dropped = await self._redis.forget_cards()
            for citizen, card in list(self._unwritten.items()):
                await self._redis.cache_card(citizen, card, int(time.time()))
                del self._unwritten[citizen]
        except STATE_ERRORS:
            self._retry_at = self._clock() + RETRY_SECONDS
            return
        self._retry_at = None
        metrics.state_degraded(False)
        log.warning("Redis is back: shared state again (%d cached cards dropped)", dropped)

    async def admit(
        self, citizen: bytes, limit: int, now: float
    ) -> tuple[CardSnapshot | None, int | None]:
        async def local() -> tuple[CardSnapshot | None, int | None]:
            _, wait = await self._local.admit(citizen, limit, now)
            return None, wait  # no cached card while degraded: read the database

        return await self._try(lambda: self._redis.admit(citizen, limit, now), local)

    async def seen_before(
        self, code_id: bytes, forget_after: int, now: int, *, shared_only: bool = False
    ) -> bool:
        async def local() -> bool:
            if shared_only:
                raise RedisError("shared state unavailable: running degraded")
            return await self._local.seen_before(code_id, forget_after, now)

        return await self._try(lambda: self._redis.seen_before(code_id, forget_after, now), local)

    async def cache_card(
        self, citizen: bytes, card: CardSnapshot, now: int, *, write_through: bool = False
    ) -> None:
        async def remember() -> None:
            # Cache fills are only an optimisation; a status change must reach Redis.
            held = self._unwritten.get(citizen)
            newer = held is None or held.version <= card.version
            room = held is not None or len(self._unwritten) < MAX_UNWRITTEN
            if write_through and newer and room:
                self._unwritten[citizen] = card

        await self._try(lambda: self._redis.cache_card(citizen, card, now), remember)

    async def add_issued(self, counts: dict[int, int]) -> None:
        async def keep() -> None:
            # Not counted apart per process: the tally keeps its counts for the next flush.
            raise RedisError("shared state unavailable: running degraded")

        await self._try(lambda: self._redis.add_issued(counts), keep)

    async def issued(self, hours: list[int]) -> list[int]:
        async def unknown() -> list[int]:
            raise RedisError("shared state unavailable: running degraded")

        return await self._try(lambda: self._redis.issued(hours), unknown)

    async def ping(self) -> None:
        """Raise while Redis cannot be reached; once it answers, leave degraded mode."""
        try:
            await self._redis.ping()
        except STATE_ERRORS:
            if self._retry_at is None:
                self._retry_at = self._clock() + RETRY_SECONDS
                metrics.state_degraded(True)
            raise
        if self._retry_at is not None:
            await self._recover()

    async def close(self) -> None:
        await self._redis.close()


def make_state(redis_url: str | None, prefix: str) -> SharedState:
    return FailoverState(RedisState(redis_url, prefix)) if redis_url else MemoryState()
