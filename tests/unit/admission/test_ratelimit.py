from __future__ import annotations

import math
import multiprocessing
import uuid
from collections.abc import AsyncIterator

import pytest
from redis import RedisError
from redis.asyncio import Redis

from gateway.admission.ratelimit import (
    GCRA_SCRIPT,
    LocalLimiter,
    RedisLimiter,
    SharedMemoryLimiter,
    create_shared_table,
)
from gateway.shared.redis_store import RedisStore, StoreUnavailable, connect_redis


async def test_a_full_bucket_allows_a_burst_of_the_limit_then_refuses() -> None:
    limiter = LocalLimiter(5)
    decisions = [await limiter.hit("1.2.3.4") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert 11 < refused.retry_after <= 12  # one request every 60/5 = 12 s
    assert refused.headers()["retry-after"] == "12"
    assert refused.headers()["x-ratelimit-limit"] == "5"
    assert refused.headers()["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in decisions[0].headers()


async def test_clients_have_separate_budgets() -> None:
    limiter = LocalLimiter(1)
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.hit("a")).allowed
    assert (await limiter.hit("b")).allowed


def _hammer(table: object, results: multiprocessing.Queue[int]) -> None:
    limiter = SharedMemoryLimiter(20, table)
    results.put(sum(limiter.hit_now("10.0.0.1").allowed for _ in range(50)))


def test_shared_memory_is_one_budget_across_processes() -> None:
    table = create_shared_table()
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_hammer, args=(table, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert sum(results.get(timeout=5) for _ in workers) == 20


def test_shared_memory_keeps_many_clients_apart() -> None:
    limiter = SharedMemoryLimiter(2, create_shared_table())
    for client in range(5000):
        assert limiter.hit_now(f"10.1.{client // 256}.{client % 256}").allowed
    assert limiter.hit_now("10.1.0.0").allowed
    assert not limiter.hit_now("10.1.0.0").allowed


async def test_redis_limiter_is_shared_and_falls_back_when_redis_is_down() -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(connect_redis("redis://127.0.0.1:6379/0"), prefix) for _ in range(2)]
    try:
        await stores[0].client.ping()
    except RedisError:
        pytest.fail("this test needs Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    limiters = [RedisLimiter(4, store, LocalLimiter(4)) for store in stores]
    allowed = [(await limiters[i % 2].hit("9.9.9.9")).allowed for i in range(8)]
    assert allowed == [True] * 4 + [False] * 4

    down = RedisStore(connect_redis("redis://127.0.0.1:1/0"), prefix)
    fallback = LocalLimiter(2)
    limiter = RedisLimiter(2, down, fallback)
    assert [(await limiter.hit("9.9.9.9")).allowed for _ in range(3)] == [True, True, False]
    assert down.is_down
    await stores[0].client.delete(stores[0].key("rl", "9.9.9.9"))
    for store in [*stores, down]:
        await store.aclose()


async def test_a_redis_outage_does_not_hand_out_a_fresh_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(connect_redis("redis://127.0.0.1:6379/0"), prefix)
    try:
        await store.client.ping()
    except RedisError:
        pytest.fail("this test needs Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    for fallback in (LocalLimiter(4), SharedMemoryLimiter(4, create_shared_table())):
        client = f"8.8.8.{len(prefix)}-{type(fallback).__name__}"
        limiter = RedisLimiter(4, store, fallback)
        assert [(await limiter.hit(client)).remaining for _ in range(3)] == [3, 2, 1]

        async def unavailable(*_: object) -> None:
            raise StoreUnavailable("down")

        with monkeypatch.context() as patched:
            patched.setattr(store, "run", unavailable)
            during = [await limiter.hit(client) for _ in range(3)]
        # The local limiter goes on from where Redis was: 1 left, not a fresh 4.
        assert [decision.allowed for decision in during] == [True, False, False]
        assert during[0].remaining == 0
    await store.aclose()


def test_a_budget_of_one_allows_the_first_request_whatever_the_clock_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # In floating-point seconds, 1988.339522512152 + 60 - 60 rounded to one step above it, and
    # the first request was refused; in whole microseconds nothing rounds.
    monkeypatch.setattr("gateway.admission.ratelimit._now_us", lambda: 1_988_339_522_512)
    decision = LocalLimiter(1).hit_now("first")
    assert decision.allowed and decision.remaining == 0


# --- The arithmetic over the whole range of RATE_LIMIT_PER_MIN (1 to 10,000,000) -----------------

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMITS = [1, 60, 100_000, 10_000_000]
# Limits whose whole burst a test can afford to spend one request at a time.
BURSTS = [1, 60, 100_000]
FROZEN_US = 3_000_000_123_457  # 35 days of uptime, in microseconds


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    """A store on the real Redis under a prefix of its own, whose keys are deleted afterwards.

    Its `fallbacks` list the purposes of the calls it could not run in Redis.
    """
    fallbacks: list[str] = []
    store = RedisStore(connect_redis(REDIS_URL), f"test-{uuid.uuid4().hex[:8]}:", on_fallback=fallbacks.append)
    store.fallbacks = fallbacks  # type: ignore[attr-defined]
    try:
        await store.client.ping()
    except RedisError:
        pytest.fail("this test needs Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    yield store
    keys = [key async for key in store.client.scan_iter(f"{store.prefix}*")]
    if keys:
        await store.client.delete(*keys)
    await store.aclose()


@pytest.fixture
async def patient_redis() -> AsyncIterator[Redis]:
    """A client that waits for a script of 100,000 steps (the gateway's gives up after 250 ms)."""
    client = Redis.from_url(REDIS_URL, socket_timeout=10)
    yield client
    await client.aclose()


@pytest.mark.parametrize("limit", LIMITS)
async def test_the_redis_limiter_works_over_the_whole_range(redis_store: RedisStore, limit: int) -> None:
    limiter = RedisLimiter(limit, redis_store, LocalLimiter(limit))
    first = await limiter.hit("7.7.7.7")
    assert redis_store.fallbacks == []  # type: ignore[attr-defined]  # Redis ran the script
    assert first.allowed and first.remaining == limit - 1
    assert first.reset_after == 60 / limit
    second = await limiter.hit("7.7.7.7")
    assert redis_store.fallbacks == []  # type: ignore[attr-defined]
    if limit == 1:
        assert not second.allowed and 59 < second.retry_after <= 60
    else:
        assert second.allowed and second.remaining in (limit - 2, limit - 1)  # one may have refilled
    if limit <= 60:  # the key lives as long as the client's debt, in whole milliseconds
        debt_ms = min(limit, 2) * 60_000 / limit
        assert debt_ms - 1000 < await redis_store.client.pttl(redis_store.key("rl", "7.7.7.7")) <= debt_ms


def _frozen(script: str, clock: str = "{ARGV[2], ARGV[3]}") -> str:
    """The limiter's script with the clock taken from `clock` (default: ARGV[2] seconds, ARGV[3]
    microseconds) instead of Redis's TIME."""
    frozen = script.replace("redis.call('TIME')", clock)
    assert frozen != script, "the script no longer reads the clock with redis.call('TIME')"
    return frozen


def _sequence_script(script: str) -> str:
    """The frozen script run once per instant in ARGV[2..] (pairs of seconds and microseconds), in
    one go: what each answered.

    Redis expires no key while a script runs, so the state one hit leaves is there for the next
    however long real time the calls would have taken apart: the key lives as long as the
    client's debt in *real* milliseconds, only 1 ms after one request at 100,000 a minute.
    """
    body = _frozen(script, clock="clock")
    return f"""
local function hit(clock)
{body}
end
local answers = {{}}
for i = 2, #ARGV, 2 do
  answers[#answers + 1] = hit({{ARGV[i], ARGV[i + 1]}})
end
return answers
"""


def _burst_script(script: str) -> str:
    """The frozen script run ARGV[4] times in one go, at one instant: what each answered."""
    body = _frozen(script)
    return f"""
local function hit()
{body}
end
local answers = {{}}
for i = 1, tonumber(ARGV[4]) do
  local answer = hit()
  answers[i] = answer
end
local allowed, last_allowed = 0, nil
for i = 1, #answers do
  if answers[i][1] == 1 then allowed = allowed + 1; last_allowed = answers[i] end
end
local refused = answers[#answers]
return {{allowed, answers[1][2], last_allowed[2], last_allowed[4], refused[1], refused[3], refused[4]}}
"""


@pytest.mark.parametrize("limit", BURSTS)
async def test_the_redis_script_allows_exactly_the_limit_at_one_instant(
    redis_store: RedisStore, patient_redis: Redis, limit: int
) -> None:
    script = patient_redis.register_script(_burst_script(GCRA_SCRIPT))
    key = redis_store.key("rl", "burst")
    seconds, micros = 1_800_000_000, 999_999
    answer = await script(keys=[key], args=[limit, seconds, micros, limit + 1])
    allowed, first_remaining, last_remaining, last_reset_us, refused, retry_us, reset_us = answer
    interval_us = 60_000_000 / limit
    assert allowed == limit and refused == 0
    assert first_remaining == limit - 1 and last_remaining == 0
    assert last_reset_us == reset_us == 60_000_000  # the bucket is full again in a minute
    assert retry_us == math.ceil(interval_us)  # one request refills in one interval


@pytest.mark.parametrize("limit", LIMITS)
async def test_the_redis_script_refills_one_request_per_interval(redis_store: RedisStore, limit: int) -> None:
    script = redis_store.client.register_script(_sequence_script(GCRA_SCRIPT))
    key = redis_store.key("rl", "refill")
    interval_us = 60_000_000 // limit  # a whole number of microseconds for these limits
    start = 1_800_000_000 * 1_000_000 + 123_456
    # The state after limit-1 requests at `start` (one future arrival time) is also what one
    # request leaves (limit-2) intervals after `start`, into a full bucket.
    setup = [start + (limit - 2) * interval_us] if limit >= 2 else []
    instants = [*setup, start, start, start + interval_us - 1, start + interval_us]
    clock = [part for at_us in instants for part in divmod(at_us, 1_000_000)]
    answers = [list(answer) for answer in await script(keys=[key], args=[limit, *clock])]

    if setup:
        assert answers.pop(0)[0] == 1
    assert answers == [
        [1, 0, 0, 60_000_000],  # the last request of the budget
        [0, 0, interval_us, 60_000_000],
        [0, 0, 1, 60_000_000 - interval_us + 1],
        [1, 0, 0, 60_000_000],  # one interval later: one request again
    ]


def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The local limiters' clock (microseconds), stopped at `clock[0]` until the test moves it."""
    clock = [FROZEN_US]
    monkeypatch.setattr("gateway.admission.ratelimit._now_us", lambda: clock[0])
    return clock


def _local_limiters(limit: int) -> list[LocalLimiter | SharedMemoryLimiter]:
    return [LocalLimiter(limit), SharedMemoryLimiter(limit, create_shared_table())]


@pytest.mark.parametrize("limit", BURSTS)
def test_the_local_limiters_allow_exactly_the_limit_at_one_instant(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    _frozen_clock(monkeypatch)
    for limiter in _local_limiters(limit):
        decisions = [limiter.hit_now("6.6.6.6") for _ in range(limit)]
        assert all(decision.allowed for decision in decisions), type(limiter).__name__
        assert decisions[0].remaining == limit - 1 and decisions[-1].remaining == 0
        assert decisions[-1].reset_after == 60.0
        refused = limiter.hit_now("6.6.6.6")
        assert not refused.allowed
        assert refused.retry_after == 60 / limit and refused.reset_after == 60.0


@pytest.mark.parametrize("limit", LIMITS)
def test_the_local_limiters_refill_one_request_per_interval(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    clock = _frozen_clock(monkeypatch)
    interval_us = 60_000_000 // limit  # a whole number of microseconds for these limits
    for limiter in _local_limiters(limit):
        clock[0] = FROZEN_US
        limiter.sync("5.5.5.5", (60_000_000 - interval_us) / 1e6)  # limit-1 requests spent, one left
        last = limiter.hit_now("5.5.5.5")
        assert last.allowed and last.remaining == 0 and last.reset_after == 60.0, type(limiter).__name__
        refused = limiter.hit_now("5.5.5.5")
        assert not refused.allowed and refused.retry_after == interval_us / 1e6
        clock[0] = FROZEN_US + interval_us - 1
        almost = limiter.hit_now("5.5.5.5")
        assert not almost.allowed and almost.retry_after == 1e-6
        clock[0] = FROZEN_US + interval_us
        refilled = limiter.hit_now("5.5.5.5")
        assert refilled.allowed and refilled.remaining == 0 and refilled.reset_after == 60.0
