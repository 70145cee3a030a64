"""
Per-client rate limiting: a GCRA token bucket of `RATE_LIMIT_PER_MIN` requests per minute.

GCRA keeps one number per client, the "theoretical arrival time" (TAT): each request moves it
`interval = 60 s / limit` into the future, and a request is refused when that would put it more
than `limit` intervals ahead of now. A full bucket allows a burst of `limit` requests, then one
every `interval`.

The arithmetic is in whole numbers, so that it is exact over the whole range of the setting
(1 to 10,000,000 a minute, an interval from 60 s down to 6 us): time in microseconds, and a
client's debt (how far its TAT is ahead of now) in units of 1/limit microsecond, in which one
request costs exactly 60,000,000 and the whole bucket 60,000,000 x limit. A TAT is kept as whole
microseconds plus the units left over. In milliseconds the interval rounded to 0 from 60,001 a
minute (and Redis refused the expiry of 0 ms); in floating-point seconds each step rounded, and
a burst of 10,000,000 came out 77 requests short.

Three stores, one arithmetic (`_gcra`, and the same steps in Lua):

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

from gateway.shared.hashing import double_hash
from gateway.shared.redis_store import RedisStore, StoreUnavailable

__all__ = [
    "GCRA_SCRIPT",
    "Decision",
    "Limiter",
    "LocalLimiter",
    "RedisLimiter",
    "SharedMemoryLimiter",
    "create_shared_table",
]

# One request's cost in units of 1/limit microsecond: the window in microseconds, whatever the limit.
COST = 60_000_000
# Slots in the shared-memory table: 3 doubles each (client hash, TAT in microseconds, units
# over), 1.5 MiB in all; probing finds a free one. Every value is a whole number below 2**53,
# which a double holds exactly.
TABLE_SLOTS = 65536
SLOT_SIZE = 3
PROBES = 8

# KEYS[1] = the client's bucket; ARGV[1] = the limit (requests a minute).
# Returns {allowed, remaining, retry_after_us, reset_after_us}; integers only (Lua truncates).
# Every number stays below 2**53, so Lua's doubles hold them exactly: microseconds since 1970
# (~1.8e15), and debts of at most 6e7 x 1e7 = 6e14 units. The stored value is "TAT_us:units";
# anything else (a value in another format) counts as a full bucket.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local cost = 60000000
local capacity = cost * limit
local debt = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local tat, units = string.match(stored, '^(%d+):(%d+)$')
  if tat then debt = math.max(0, (tonumber(tat) - now) * limit + tonumber(units)) end
end
local new_debt = debt + cost
if new_debt > capacity then
  return {0, 0, math.ceil((new_debt - capacity) / limit), math.ceil(debt / limit)}
end
local ahead = math.floor(new_debt / limit)
local value = string.format('%d:%d', now + ahead, new_debt - ahead * limit)
redis.call('SET', KEYS[1], value, 'PX', math.max(1, math.ceil(new_debt / limit / 1000)))
return {1, math.floor((capacity - new_debt) / cost), 0, math.ceil(new_debt / limit)}
"""


def _now_us() -> int:
    """CLOCK_MONOTONIC in whole microseconds; all processes of a machine share it."""
    return time.monotonic_ns() // 1000


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _gcra(tat: int, units: int, now: int, limit: int) -> tuple[tuple[int, int] | None, Decision]:
    """One GCRA step at `now` (microseconds) for the TAT `tat` us + `units` / limit us: the new
    TAT (None if the request is refused) and the decision. The same steps as `GCRA_SCRIPT`."""
    capacity = COST * limit
    debt = max(0, (tat - now) * limit + units)
    new_debt = debt + COST
    if new_debt > capacity:
        retry_us, reset_us = _ceil_div(new_debt - capacity, limit), _ceil_div(debt, limit)
        return None, Decision(False, limit, 0, retry_us / 1e6, reset_us / 1e6)
    ahead, left_over = divmod(new_debt, limit)
    decision = Decision(True, limit, (capacity - new_debt) // COST, 0.0, _ceil_div(new_debt, limit) / 1e6)
    return (now + ahead, left_over), decision


class LocalLimiter:
    """In this process only. Entries are dropped once their bucket is full again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tats: dict[str, tuple[int, int]] = {}

    async def hit(self, client: str) -> Decision:
        return self.hit_now(client)

    def hit_now(self, client: str) -> Decision:
        now = _now_us()
        if len(self._tats) > 100_000:  # bound memory: forget clients whose bucket is full
            self._tats = {key: tat for key, tat in self._tats.items() if tat[0] > now}
        tat, units = self._tats.get(client, (now, 0))
        new_tat, decision = _gcra(tat, units, now, self.limit)
        if new_tat is not None:
            self._tats[client] = new_tat
        return decision

    def sync(self, client: str, reset_after: float) -> None:
        """Take over another limiter's state: `client`'s bucket is full in `reset_after` seconds."""
        self._tats[client] = (_now_us() + round(reset_after * 1e6), 0)


def create_shared_table() -> Any:
    """The shared-memory table; call in the main process before the workers start."""
    return multiprocessing.Array(ctypes.c_double, SLOT_SIZE * TABLE_SLOTS)


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
        self._values = table.get_obj()
        self._lock = table.get_lock()
        self._slots = len(self._values) // SLOT_SIZE

    async def hit(self, client: str) -> Decision:
        return self.hit_now(client)

    def hit_now(self, client: str) -> Decision:
        key = double_hash(client)  # never 0, which marks a free slot
        with self._lock:
            now = _now_us()
            slot, tat, units = self._slot(key, now)
            new_tat, decision = _gcra(tat, units, now, self.limit)
            if new_tat is not None:
                self._store(slot, key, *new_tat)
        return decision

    def sync(self, client: str, reset_after: float) -> None:
        """Take over another limiter's state: `client`'s bucket is full in `reset_after` seconds."""
        key = double_hash(client)  # never 0, which marks a free slot
        with self._lock:
            now = _now_us()
            slot, _, _ = self._slot(key, now)
            self._store(slot, key, now + round(reset_after * 1e6), 0)

    def _store(self, slot: int, key: float, tat: int, units: int) -> None:
        base = SLOT_SIZE * slot
        self._values[base : base + SLOT_SIZE] = [key, float(tat), float(units)]

    def _slot(self, key: float, now: int) -> tuple[int, int, int]:
        """The slot for the client hashed to `key`, and its TAT (`now` for a slot new to it)."""
        values = self._values
        start = int(key) % self._slots
        free = victim = -1
        victim_tat = math.inf
        for probe in range(PROBES):
            slot = (start + probe) % self._slots
            base = SLOT_SIZE * slot
            held, tat = values[base], values[base + 1]
            if held == key:
                return slot, int(tat), int(values[base + 2])
            if held == 0.0 or tat <= now:
                if free < 0:
                    free = slot
            elif tat < victim_tat:
                victim, victim_tat = slot, tat
        return (free if free >= 0 else victim), now, 0


class RedisLimiter:
    """Every worker of every instance sharing the Redis; `fallback` while Redis is down."""

    def __init__(self, limit: int, store: RedisStore, fallback: LocalLimiter | SharedMemoryLimiter) -> None:
        self.limit = limit
        self._store = store
        self._fallback = fallback
        self._script = store.client.register_script(GCRA_SCRIPT)
        self._args = [limit]

    async def hit(self, client: str) -> Decision:
        key = self._store.key("rl", client)
        try:
            allowed, remaining, retry_us, reset_us = await self._store.run(
                "rate limiter", lambda _: self._script(keys=[key], args=self._args)
            )
        except StoreUnavailable:
            return self._fallback.hit_now(client)
        decision = Decision(bool(allowed), self.limit, int(remaining), int(retry_us) / 1e6, int(reset_us) / 1e6)
        self._fallback.sync(client, decision.reset_after)
        return decision
