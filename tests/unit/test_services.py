"""gateway/services.py: what a worker builds at start-up, and what it closes when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import httpx

from gateway.admission.ratelimit import LocalLimiter, RedisLimiter, SharedMemoryLimiter, create_shared_table
from gateway.services import Services
from gateway.settings import Settings
from tests.conftest import worker_services

ROUTES = {
    "MODEL_ROUTE_a": "http://127.0.0.1:9101/v1",
    "MODEL_ROUTE_b": "http://127.0.0.1:9102/v1,http://127.0.0.1:9103/v1",
}


def build(settings: Settings, shared_ctx: object = None) -> Services:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"data": []}))
    return worker_services(settings, transport, shared_ctx)


def limiter_of(services: Services) -> object:
    return services.guard._limiter


async def test_every_route_and_replica_is_built_and_the_catalogue_sees_them(
    settings_from: Callable[..., Settings],
) -> None:
    services = build(settings_from(**ROUTES))
    status = services.catalogue.route_status()
    assert [route["key"] for route in status["routes"]] == ["a", "b"]
    assert [len(route["replicas"]) for route in status["routes"]] == [1, 2]
    await services.aclose()


async def test_the_limiter_is_the_machine_table_when_the_main_process_made_one(
    settings_from: Callable[..., Settings],
) -> None:
    settings = settings_from(RATE_LIMIT_PER_MIN="60", **ROUTES)
    assert isinstance(limiter_of(build(settings)), LocalLimiter)  # a single process (tests)
    shared = SimpleNamespace(rate_table=create_shared_table())
    assert isinstance(limiter_of(build(settings, shared)), SharedMemoryLimiter)
    assert limiter_of(build(settings_from(RATE_LIMIT_PER_MIN="0", **ROUTES))) is None


async def test_with_redis_the_limiter_goes_through_redis_and_falls_back_to_the_machine(
    settings_from: Callable[..., Settings],
) -> None:
    settings = settings_from(RATE_LIMIT_PER_MIN="60", USE_REDIS="true", REDIS_URL="redis://127.0.0.1:1/0", **ROUTES)
    services = build(settings)
    assert isinstance(limiter_of(services), RedisLimiter)
    assert services.redis is not None
    await services.aclose()


async def test_closing_ends_the_stream_deadline(settings_from: Callable[..., Settings]) -> None:
    services = build(settings_from(**ROUTES))
    services.stream_deadline = services.proxy.end_streams_after(60)
    await services.aclose()
    await asyncio.sleep(0)
    assert services.stream_deadline.cancelled()
