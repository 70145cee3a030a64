from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TypeVar

import pytest
from redis import RedisError
from redis.asyncio import Redis

from gateway.routing import models_cache
from gateway.routing.models_cache import ModelList, ModelsCache
from gateway.shared.redis_store import RedisStore, connect_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


def listing(*ids: str) -> ModelList:
    return ModelList(models=tuple({"id": model_id} for model_id in ids), latency_ms=5)


class CountingFetch:
    def __init__(self, result: ModelList | None, delay: float = 0.0) -> None:
        self.result, self.delay, self.calls = result, delay, 0

    async def __call__(self, key: str) -> ModelList | None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.result


class BlockingFetch:
    """A fetch that returns `results` in turn, each once the test lets it through (`release()`
    opens the gate, `hold()` closes it again)."""

    def __init__(self, *results: ModelList | None) -> None:
        self.results, self.calls = list(results), 0
        self._gate = asyncio.Event()

    async def __call__(self, key: str) -> ModelList | None:
        self.calls += 1
        await asyncio.wait_for(self._gate.wait(), 5)  # a test that forgot to open it fails
        return self.results.pop(0)

    def release(self) -> None:
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The cache's monotonic clock, moved forward by the test: `clock[0]` seconds ahead."""
    ahead = [0.0]
    monkeypatch.setattr(models_cache, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + ahead[0]))
    return ahead


async def settle(cache: ModelsCache) -> None:
    """Wait for the cache's background refreshes (bounded)."""
    for _ in range(200):
        if not cache._refreshes:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("a background refresh did not finish")


async def listed_once(fetch: BlockingFetch) -> ModelsCache:
    """A cache (TTL 10 s) that has fetched its first list from `fetch`, the gate left open."""
    fetch.release()
    cache = ModelsCache(fetch, ttl_seconds=10)
    await cache.ids("a")
    return cache


async def test_a_list_read_in_its_last_tenth_is_refreshed_in_the_background(clock: list[float]) -> None:
    fetch = BlockingFetch(listing("old"), listing("new"))
    cache = await listed_once(fetch)
    assert await cache.ids("a") == frozenset({"old"})
    fetch.hold()
    clock[0] = 8.5  # not yet in the last tenth: nothing happens
    assert await cache.ids("a") == frozenset({"old"})
    assert fetch.calls == 1
    clock[0] = 9.5
    # Every read in the window gets the current list at once, while one refresh is under way.
    for _ in range(5):
        assert await asyncio.wait_for(cache.ids("a"), 1) == frozenset({"old"})
    assert (await cache.get_many(["a"]))["a"] == listing("old")
    assert fetch.calls == 2
    fetch.release()
    await settle(cache)
    assert await cache.ids("a") == frozenset({"new"})
    clock[0] = 18.0  # the new list lives a full TTL from its fetch
    assert await cache.ids("a") == frozenset({"new"})
    assert fetch.calls == 2


async def test_a_list_not_read_before_its_end_is_fetched_by_the_next_request(clock: list[float]) -> None:
    fetch = BlockingFetch(listing("old"), listing("new"))
    cache = await listed_once(fetch)
    clock[0] = 10.5  # past the TTL: never served, whatever the refresh window was
    assert await cache.ids("a") == frozenset({"new"})
    assert fetch.calls == 2


async def test_a_failed_refresh_keeps_the_list_until_it_expires(clock: list[float]) -> None:
    fetch = BlockingFetch(listing("old"), None, listing("back"))
    cache = await listed_once(fetch)
    clock[0] = 9.5
    assert await cache.ids("a") == frozenset({"old"})
    await settle(cache)
    assert await cache.ids("a") == frozenset({"old"})  # no second refresh before it expires
    assert fetch.calls == 2
    clock[0] = 10.5
    assert await cache.ids("a") == frozenset({"back"})
    assert fetch.calls == 3


async def test_close_cancels_a_refresh_under_way(clock: list[float]) -> None:
    fetch = BlockingFetch(listing("old"), listing("new"))
    cache = await listed_once(fetch)
    fetch.hold()
    clock[0] = 9.5
    await cache.ids("a")
    await asyncio.sleep(0)
    assert fetch.calls == 2
    cache.close()
    await settle(cache)
    assert await cache.ids("a") == frozenset({"old"})


async def test_concurrent_misses_make_one_fetch() -> None:
    fetch = CountingFetch(listing("m"), delay=0.05)
    cache = ModelsCache(fetch, ttl_seconds=60)
    results = await asyncio.gather(*(cache.ids("a") for _ in range(20)))
    assert fetch.calls == 1
    assert all(ids == frozenset({"m"}) for ids in results)


async def test_entries_expire_after_the_ttl() -> None:
    fetch = CountingFetch(listing("m"))
    cache = ModelsCache(fetch, ttl_seconds=0.05)
    await cache.get("a")
    await cache.get("a")
    assert fetch.calls == 1
    await asyncio.sleep(0.08)
    await cache.get("a")
    assert fetch.calls == 2


async def test_a_failed_listing_is_none_and_retried_soon() -> None:
    fetch = CountingFetch(None)
    cache = ModelsCache(fetch, ttl_seconds=0.05)
    assert await cache.get("a") is None
    assert await cache.ids("a") is None
    assert fetch.calls == 1
    await asyncio.sleep(0.08)
    await cache.get("a")
    assert fetch.calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch() -> None:
    fetch = CountingFetch(listing("m"), delay=0.05)
    cache = ModelsCache(fetch, ttl_seconds=60)
    first = asyncio.ensure_future(cache.get("a"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(cache.get("a"))
    await asyncio.sleep(0.01)
    second.cancel()
    assert (await first) is not None
    assert fetch.calls == 1


@pytest.fixture
async def redis_prefix() -> str:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisError:
        pytest.fail("these tests need Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    keys = [key async for key in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_caches_sharing_redis_make_one_fetch_per_ttl(redis_prefix: str) -> None:
    fetch = CountingFetch(listing("m"), delay=0.05)
    stores = [RedisStore(connect_redis(REDIS_URL), redis_prefix) for _ in range(3)]
    caches = [ModelsCache(fetch, ttl_seconds=0.5, store=store) for store in stores]
    results = await asyncio.gather(*(cache.ids("a") for cache in caches for _ in range(5)))
    assert all(ids == frozenset({"m"}) for ids in results)
    assert fetch.calls == 1
    await asyncio.sleep(0.6)
    await asyncio.gather(*(cache.ids("a") for cache in caches))
    assert fetch.calls == 2
    for store in stores:
        await store.aclose()


async def test_a_refresh_ahead_with_redis_is_fetched_once_for_every_cache(
    redis_prefix: str, clock: list[float]
) -> None:
    fetch = BlockingFetch(listing("old"), listing("new"))
    fetch.release()
    stores = [RedisStore(connect_redis(REDIS_URL), redis_prefix) for _ in range(2)]
    first, second = (ModelsCache(fetch, ttl_seconds=10, store=store) for store in stores)
    assert await first.ids("a") == await second.ids("a") == frozenset({"old"})
    assert fetch.calls == 1
    clock[0] = 9.5  # both local copies in their last tenth, and the shared one about to expire:
    await stores[0].client.pexpire(stores[0].key("models", "a"), 300)
    assert await first.ids("a") == frozenset({"old"})  # served at once; this one refreshes it
    await settle(first)
    assert fetch.calls == 2
    assert await first.ids("a") == frozenset({"new"})
    assert await second.ids("a") == frozenset({"old"})  # its own copy, still valid, while it
    await settle(second)  # takes the list the first one stored, without a fetch of its own
    assert await second.ids("a") == frozenset({"new"})
    assert fetch.calls == 2
    assert await stores[0].client.exists(stores[0].key("models", "a", "lock")) == 0
    for store in stores:
        await store.aclose()


async def test_a_refresh_ahead_that_finds_the_lock_taken_keeps_its_list(redis_prefix: str, clock: list[float]) -> None:
    fetch = BlockingFetch(listing("old"), listing("new"))
    fetch.release()
    stores = [RedisStore(connect_redis(REDIS_URL), redis_prefix) for _ in range(2)]
    first, second = (ModelsCache(fetch, ttl_seconds=10, store=store) for store in stores)
    await first.ids("a")
    await second.ids("a")
    fetch.hold()
    clock[0] = 9.5
    await stores[0].client.pexpire(stores[0].key("models", "a"), 300)
    await first.ids("a")  # takes the lock, and waits in its fetch
    for _ in range(200):
        if fetch.calls == 2:
            break
        await asyncio.sleep(0.005)
    assert await second.ids("a") == frozenset({"old"})
    await settle(second)  # lost the lock: no fetch of its own, the list it has stays in use
    assert fetch.calls == 2
    assert await second.ids("a") == frozenset({"old"})
    fetch.release()
    await settle(first)
    clock[0] = 9.6
    await second.ids("a")
    await settle(second)
    assert await second.ids("a") == frozenset({"new"})
    assert fetch.calls == 2
    for store in stores:
        await store.aclose()


class StoreThatPausesAfterItsFirstCall(RedisStore):
    """Runs `meanwhile` right after its first Redis call: another instance acting in that gap."""

    def __init__(self, client: Redis, prefix: str, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__(client, prefix)
        self._meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def run(self, purpose: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        result = await super().run(purpose, call)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return result


async def test_a_listing_stored_between_a_miss_and_the_lock_is_not_fetched_again(redis_prefix: str) -> None:
    fetch = CountingFetch(listing("m"))
    other_store = RedisStore(connect_redis(REDIS_URL), redis_prefix)
    other = ModelsCache(fetch, ttl_seconds=30, store=other_store)
    # This instance misses, then the other one fetches, stores and unlocks before this one locks.
    store = StoreThatPausesAfterItsFirstCall(connect_redis(REDIS_URL), redis_prefix, lambda: other.ids("a"))
    cache = ModelsCache(fetch, ttl_seconds=30, store=store)
    assert await cache.ids("a") == frozenset({"m"})
    assert fetch.calls == 1
    assert await store.client.exists(store.key("models", "a", "lock")) == 0
    for each in (store, other_store):
        await each.aclose()


async def test_redis_outage_falls_back_to_the_local_cache() -> None:
    fallbacks: list[str] = []
    # Nothing listens on port 1: every Redis call fails at once.
    store = RedisStore(connect_redis("redis://127.0.0.1:1/0"), "x:", on_fallback=fallbacks.append)
    fetch = CountingFetch(listing("m"))
    cache = ModelsCache(fetch, ttl_seconds=60, store=store)
    assert await cache.ids("a") == frozenset({"m"})
    assert await cache.ids("a") == frozenset({"m"})
    assert fetch.calls == 1
    assert store.is_down and fallbacks
    await store.aclose()
