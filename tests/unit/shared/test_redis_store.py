"""RedisStore and connect_redis: the client's settings, and which failures count as an outage."""

from __future__ import annotations

import logging
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError

from gateway.admission.ratelimit import LocalLimiter, RedisLimiter
from gateway.observability.metrics import metrics
from gateway.routing.models_cache import ModelList, ModelsCache
from gateway.shared.redis_store import RedisStore, StoreUnavailable, connect_redis, is_outage

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_the_client_is_created_and_used_without_a_warning() -> None:
    # redis-py 8 warned, from every worker, about a synchronous Retry given to the asyncio client.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = RedisStore(connect_redis(REDIS_URL), "test-warnings:")
        assert await store.run("ping", lambda client: client.ping())
        await store.aclose()
    assert [str(warning.message) for warning in caught] == []


class Recorder:
    """The store's callbacks: how often each purpose fell back, and how often Redis answered an error."""

    def __init__(self) -> None:
        self.fallbacks: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def fallback(self, purpose: str) -> None:
        self.fallbacks[purpose] += 1

    def error(self, purpose: str) -> None:
        self.errors[purpose] += 1
        metrics.redis_errors.labels(purpose).inc()  # as the app counts them


@pytest.fixture
async def recorded_store() -> AsyncIterator[tuple[RedisStore, Recorder]]:
    recorder = Recorder()
    store = RedisStore(
        connect_redis(REDIS_URL),
        f"test-{uuid.uuid4().hex[:8]}:",
        on_fallback=recorder.fallback,
        on_error=recorder.error,
    )
    yield store, recorder
    keys = [key async for key in store.client.scan_iter(f"{store.prefix}*")]
    if keys:
        await store.client.delete(*keys)
    await store.aclose()


def _errors_counted(purpose: str) -> float:
    return metrics.redis_errors.labels(purpose)._value.get()


async def test_an_error_that_redis_answers_is_no_outage(
    recorded_store: tuple[RedisStore, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    store, recorder = recorded_store
    # A key of the wrong type makes the limiter's script fail in Redis (WRONGTYPE) on every call.
    await store.client.hset(store.key("rl", "3.3.3.3"), "field", "value")
    limiter = RedisLimiter(5, store, LocalLimiter(5))
    cache = ModelsCache(_listing, ttl_seconds=30, store=store)
    counted_before = _errors_counted("rate limiter")
    with caplog.at_level(logging.ERROR, logger="gateway.redis"):
        decisions = [await limiter.hit("3.3.3.3") for _ in range(20)]
        # The client got the local limiter's answers (5 of 20 allowed), and Redis stayed in use:
        assert [decision.allowed for decision in decisions] == [True] * 5 + [False] * 15
        assert not store.is_down
        assert (await limiter.hit("3.3.3.4")).remaining == 4  # another client: counted in Redis
        assert await store.client.exists(store.key("rl", "3.3.3.4")) == 1
        assert await cache.ids("a") == frozenset({"m"})  # the models cache still shares its lists
        assert await store.client.exists(store.key("models", "a")) == 1
    assert recorder.errors == {"rate limiter": 20}
    assert recorder.fallbacks == {"rate limiter": 20}  # each such call was served locally
    assert _errors_counted("rate limiter") - counted_before == 20
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert "rate limiter" in errors[0].getMessage() and "WRONGTYPE" in errors[0].getMessage()


async def test_each_purpose_logs_its_first_error_once(
    recorded_store: tuple[RedisStore, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    store, recorder = recorded_store

    async def invalid_expiry(client: Redis) -> object:
        return await client.set(store.key("x", "y"), "1", px=0)  # "invalid expire time"

    with caplog.at_level(logging.ERROR, logger="gateway.redis"):
        for purpose in ("models cache", "rate limiter", "models cache", "rate limiter"):
            with pytest.raises(StoreUnavailable):
                await store.run(purpose, invalid_expiry)
    assert not store.is_down
    assert recorder.errors == {"models cache": 2, "rate limiter": 2}
    logged = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(logged) == 2 and "models cache" in logged[0] and "rate limiter" in logged[1]


async def test_a_lost_connection_is_still_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    # Nothing listens on port 1: every call fails at once.
    store = RedisStore(connect_redis("redis://127.0.0.1:1/0"), "x:", on_fallback=recorder.fallback)
    with caplog.at_level(logging.WARNING, logger="gateway.redis"), pytest.raises(StoreUnavailable):
        await store.run("rate limiter", lambda client: client.ping())
    assert store.is_down and recorder.errors == {}
    assert any("redis unavailable" in record.getMessage() for record in caplog.records)
    await store.aclose()


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionError("refused"), True),
        (TimeoutError("slow"), True),
        (OSError("reset"), True),
        (ReadOnlyError("You can't write against a read only replica."), True),  # a failover under way
        (ResponseError("BUSY Redis is busy running a script."), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (ResponseError("invalid expire time in 'set' command"), False),
    ],
)
def test_which_errors_are_outages(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage


async def test_every_key_the_gateway_writes_is_hash_tagged(recorded_store: tuple[RedisStore, Recorder]) -> None:
    """In a cluster a multi-key script or pipeline must stay on one slot: the keys of one client
    or one route carry the same hash tag, and nothing else is hashed."""
    store, _ = recorded_store
    seen: set[bytes] = set()

    async def fetch(route_key: str) -> ModelList:  # runs while the route's lock is held
        seen.update([key async for key in store.client.scan_iter(f"{store.prefix}*")])
        return await _listing(route_key)

    await RedisLimiter(5, store, LocalLimiter(5)).hit("2.2.2.2")
    assert await ModelsCache(fetch, ttl_seconds=30, store=store).ids("a") == frozenset({"m"})
    seen.update([key async for key in store.client.scan_iter(f"{store.prefix}*")])
    prefix = store.prefix.encode()
    assert seen == {prefix + b"rl:{2.2.2.2}", prefix + b"models:{a}", prefix + b"models:{a}:lock"}
    assert key_slot(prefix + b"models:{a}") == key_slot(prefix + b"models:{a}:lock") == key_slot(b"a")
    assert key_slot(prefix + b"rl:{2.2.2.2}") == key_slot(b"2.2.2.2")


async def _listing(route_key: str) -> ModelList:
    return ModelList(models=({"id": "m"},), latency_ms=1)
