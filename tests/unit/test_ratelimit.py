from __future__ import annotations

import multiprocessing
import uuid

import pytest
from redis import RedisError

from gateway.ratelimit import LocalLimiter, RedisLimiter, SharedMemoryLimiter, create_shared_table
from gateway.redis_store import RedisStore, StoreUnavailable, connect_redis


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
    await stores[0].client.delete(stores[0].key("rl", "{9.9.9.9}"))
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
    # 1988.339522512152 + 60 - 60 rounds to one step above it: the first request was refused.
    monkeypatch.setattr("gateway.ratelimit.time.monotonic", lambda: 1988.339522512152)
    assert 1988.339522512152 + 60.0 - 60.0 > 1988.339522512152
    decision = LocalLimiter(1).hit_now("first")
    assert decision.allowed and decision.remaining == 0
