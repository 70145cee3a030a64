"""RedisStore and connect_redis: the client's settings, and which failures count as an outage."""

from __future__ import annotations

import warnings

from gateway.redis_store import RedisStore, connect_redis

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_the_client_is_created_and_used_without_a_warning() -> None:
    # redis-py 8 warned, from every worker, about a synchronous Retry given to the asyncio client.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = RedisStore(connect_redis(REDIS_URL), "test-warnings:")
        assert await store.run("ping", lambda client: client.ping())
        await store.aclose()
    assert [str(warning.message) for warning in caught] == []
