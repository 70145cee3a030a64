from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from redis import RedisError
from redis.asyncio import Redis

from gateway.models_cache import ModelList, ModelsCache
from gateway.redis_store import RedisStore, connect_redis

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
