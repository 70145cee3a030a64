"""
Per-client rate limiting: a GCRA token bucket of `RATE_LIMIT_PER_MIN` requests per minute.

GCRA keeps one number per client, the "theoretical arrival time" (TAT): each request moves it
`interval = 60 s / limit` into the future, and a request is refused when that would put it more
than `limit` intervals ahead of now. A full bucket allows a burst of `limit` requests, then one
every `interval`.

Three stores, one arithmetic:

- `RedisLimiter`: one Lua script, Redis's own clock, so every worker of every instance sharing
  the Redis shares one budget. When Redis fails it hands over to the machine-local limiter
  (and takes over again when Redis answers). Each of Redis's answers is copied into the local
  limiter, so a client that spent its budget does not get a fresh one when Redis goes down.
- `SharedMemoryLimiter`: a table in shared memory, created by the main process before the
  workers start, so the workers of one machine share one budget without Redis.
- `LocalLimiter`: a dict, for a single process where there is no main process (tests).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import multiprocessing.sharedctypes
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .hashing import double_hash
from .redis_store import RedisStore, StoreUnavailable

__all__ = [
    "Decision",
    "Limiter",
    "LocalLimiter",
    "RedisLimiter",
    "SharedMemoryLimiter",
    "create_shared_table",
]

WINDOW_SECONDS = 60.0
# Slots in the shared-memory table: 2 doubles each, 1 MiB in all; probing finds a free one.
TABLE_SLOTS = 65536
PROBES = 8

# KEYS[1] = the client's bucket; ARGV = interval (ms), burst (requests).
# Returns {allowed, remaining, retry_after_ms, reset_after_ms}; integers only (Lua truncates).
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until a request would be allowed (0 when allowed)
    reset_after: float  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        headers = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class Limiter(Protocol):
    limit: int

    async def hit(self, client: str) -> Decision: ...


def _gcra(tat: float, now: float, interval: float, burst: int) -> tuple[float | None, Decision]:
    """One GCRA step: the new TAT (None if the request is refused) and the decision."""
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - interval * burst
    # A nanosecond of slack: `now + interval - interval` can come out one rounding step above
    # `now`, which refused the first request of a client with a budget of 1.
    if now < allow_at - 1e-9:
        return None, Decision(False, burst, 0, allow_at - now, tat - now)
    remaining = int((now - allow_at) / interval + 1e-9)
    return new_tat, Decision(True, burst, remaining, 0.0, new_tat - now)


class LocalLimiter:
    """In this process only. Entries are dropped once their bucket is full again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.interval = WINDOW_SECONDS / limit
        self._tats: dict[str, float] = {}

    async def hit(self, client: str) -> Decision:
        return self.hit_now(client)

    def hit_now(self, client: str) -> Decision:
        now = time.monotonic()
        if len(self._tats) > 100_000:  # bound memory: forget clients whose bucket is full
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        new_tat, decision = _gcra(self._tats.get(client, now), now, self.interval, self.limit)
        if new_tat is not None:
            self._tats[client] = new_tat
        return decision

    def sync(self, client: str, reset_after: float) -> None:
        """Take over another limiter's state: `client`'s bucket is full in `reset_after` seconds."""
        self._tats[client] = time.monotonic() + reset_after


def create_shared_table() -> Any:
    """The shared-memory table; call in the main process before the workers start."""
    return multiprocessing.Array(ctypes.c_double, 2 * TABLE_SLOTS)


class SharedMemoryLimiter:
    """All workers of one machine, through a table in shared memory.

    Each slot holds (client hash, TAT). A client takes the first of `PROBES` slots that holds
    its hash or whose bucket is full again (an idle client needs no state); if all are busy,
    the one closest to full is reused. The critical section is a few array reads under the
    table's lock: microseconds, so blocking the event loop on it is cheaper than anything else.
    The clock is CLOCK_MONOTONIC, which all processes of a machine share.
    """

    def __init__(self, limit: int, table: Any) -> None:
        self.limit = limit
        self.interval = WINDOW_SECONDS / limit
        self._values = table.get_obj()
        self._lock = table.get_lock()
        self._slots = len(self._values) // 2

    async def hit(self, client: str) -> Decision:
        return self.hit_now(client)

    def hit_now(self, client: str) -> Decision:
        key = double_hash(client)  # never 0, which marks a free slot
        values = self._values
        with self._lock:
            now = time.monotonic()
            slot, current = self._slot(key, now)
            new_tat, decision = _gcra(current, now, self.interval, self.limit)
            if new_tat is not None:
                values[2 * slot] = key
                values[2 * slot + 1] = new_tat
        return decision

    def sync(self, client: str, reset_after: float) -> None:
        """Take over another limiter's state: `client`'s bucket is full in `reset_after` seconds."""
        key = double_hash(client)  # never 0, which marks a free slot
        values = self._values
        with self._lock:
            now = time.monotonic()
            slot, _ = self._slot(key, now)
            values[2 * slot] = key
            values[2 * slot + 1] = now + reset_after

    def _slot(self, key: float, now: float) -> tuple[int, float]:
        """The slot for the client hashed to `key`, and its TAT (`now` for a slot new to it)."""
        values = self._values
        start = int(key) % self._slots
        free = victim = -1
        victim_tat = math.inf
        for probe in range(PROBES):
            slot = (start + probe) % self._slots
            held, tat = values[2 * slot], values[2 * slot + 1]
            if held == key:
                return slot, tat
            if held == 0.0 or tat <= now:
                if free < 0:
                    free = slot
            elif tat < victim_tat:
                victim, victim_tat = slot, tat
        return (free if free >= 0 else victim), now


class RedisLimiter:
    """Every worker of every instance sharing the Redis; `fallback` while Redis is down."""

    def __init__(self, limit: int, store: RedisStore, fallback: LocalLimiter | SharedMemoryLimiter) -> None:
        self.limit = limit
        self._store = store
        self._fallback = fallback
        self._script = store.client.register_script(GCRA_SCRIPT)
        self._args = [int(WINDOW_SECONDS * 1000 / limit), limit]

    async def hit(self, client: str) -> Decision:
        key = self._store.key("rl", "{" + client + "}")  # hash tag: cluster-safe
        try:
            allowed, remaining, retry_ms, reset_ms = await self._store.run(
                "rate limiter", lambda _: self._script(keys=[key], args=self._args)
            )
        except StoreUnavailable:
            return self._fallback.hit_now(client)
        decision = Decision(bool(allowed), self.limit, int(remaining), int(retry_ms) / 1000, int(reset_ms) / 1000)
        self._fallback.sync(client, decision.reset_after)
        return decision
