"""One request's attempts over a route's replicas: failover, giving up, leases released."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.routing.dispatch import Dispatch
from gateway.routing.replicas import Route
from gateway.settings_loader import load_settings
from gateway.upstream.client import Upstream
from gateway.upstream.response import UpstreamResponse

URLS = ("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1")


Call = Callable[[str], Awaitable[UpstreamResponse]]


class FakeUpstream(Upstream):
    """An `Upstream` whose requests are `call(url)`; records the X-Request-ID of every attempt."""

    def __init__(self, call: Call) -> None:
        super().__init__(load_settings({"VLLM_BASE_URL": URLS[0]}, env_file=None))
        self.call = call
        self.request_ids: list[str] = []

    async def post(self, url: str, body: bytes, request_id: str) -> UpstreamResponse:
        self.request_ids.append(request_id)
        return await self.call(url)

    open_stream = post


def dispatch_to(route: Route, call: Call, max_attempts: int) -> Dispatch:
    return Dispatch(route, FakeUpstream(call), max_attempts)


def make_route(up: set[str] | None = None, interval: float = 0.02) -> Route:
    async def probe(url: str) -> bool:
        return up is None or url in up

    return Route("r", URLS, probe=probe, probe_interval=interval, cooldown_max=1.0)


async def test_dispatch_fails_over_on_refusal_and_5xx_and_releases_every_lease() -> None:
    route = make_route(up=set())
    calls: list[str] = []

    async def call(url: str) -> UpstreamResponse:
        calls.append(url)
        if url == URLS[0]:
            raise httpx.ConnectError("refused")
        if url == URLS[1]:
            return UpstreamResponse.whole(503, [], b"")
        return UpstreamResponse.whole(200, [], b'{"ok":true}', content_type="application/json")

    dispatch = dispatch_to(route, call, max_attempts=3)
    try:
        response = await dispatch.post("", b"{}", "req-1")
        assert [r.in_flight for r in route.replicas] == [0, 0, 1]
    finally:
        dispatch.release()
    assert response.status == 200 and calls == list(URLS)
    assert dispatch.retries == 2
    # vLLM refuses a request id it already has: every attempt carries the client's id, made unique.
    request_ids = dispatch.upstream.request_ids  # type: ignore[attr-defined]
    assert len(set(request_ids)) == 3 and all(rid.startswith("req-1-") for rid in request_ids)
    assert [r.in_flight for r in route.replicas] == [0, 0, 0]
    assert [r.healthy for r in route.replicas] == [False, False, True]
    route.close()


async def test_dispatch_gives_up_naming_the_route_with_the_last_failures_status() -> None:
    route = make_route(up=set())

    async def refused(url: str) -> UpstreamResponse:
        raise httpx.ConnectError("refused")

    async def slow(url: str) -> UpstreamResponse:
        raise httpx.ConnectTimeout("slow")

    with pytest.raises(UpstreamUnavailable, match="route 'r'.*3 of 3 tried"):
        await dispatch_to(route, refused, 5).post("", b"{}", "req-1")
    with pytest.raises(UpstreamTimeout, match="route 'r'"):
        await dispatch_to(make_route(up=set()), slow, 2).open_stream("", b"{}", "req-1")
    route.close()


async def test_read_timeout_is_not_retried() -> None:
    route = make_route()
    calls: list[str] = []

    async def call(url: str) -> UpstreamResponse:
        calls.append(url)
        raise httpx.ReadTimeout("slow generation")

    dispatch = dispatch_to(route, call, 3)
    with pytest.raises(UpstreamTimeout):
        await dispatch.post("", b"{}", "req-1")
    dispatch.release()
    assert len(calls) == 1 and all(r.healthy for r in route.replicas)


async def test_a_cancelled_request_releases_its_lease() -> None:
    route = make_route()

    async def hang(url: str) -> UpstreamResponse:
        await asyncio.sleep(10)
        raise AssertionError

    dispatch = dispatch_to(route, hang, 3)

    async def request() -> None:
        try:
            await dispatch.open_stream("", b"{}", "req-1")
        finally:
            dispatch.release()

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0.01)
    assert sum(r.in_flight for r in route.replicas) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sum(r.in_flight for r in route.replicas) == 0
