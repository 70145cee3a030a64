"""Upstream: the worker's client for vLLM over the transport seam, and its error mapping."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from gateway.settings import Settings
from gateway.upstream.client import Upstream, close_after_end, map_transport_error
from gateway.upstream.response import UpstreamResponse

BASE = "http://127.0.0.1:9/v1"


def upstream_over(handler: httpx.MockTransport) -> Upstream:
    return Upstream(
        Settings(read_timeout_seconds=60.0, connect_timeout_seconds=5.0, write_timeout_seconds=7.0), transport=handler
    )


async def test_a_post_carries_the_attempts_request_id_and_comes_back_read() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(400, json={"error": "bad"})

    upstream = upstream_over(httpx.MockTransport(answer))
    attempt = upstream.attempt_id("req-1")
    response = await upstream.post(f"{BASE}/chat/completions", b'{"model":"m"}', attempt)
    (request,) = seen
    assert request.headers["x-request-id"] == attempt and attempt.startswith("req-1-")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept-encoding"] == "identity"  # nothing to decompress before relaying
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 60.0, "write": 7.0, "pool": 5.0}
    assert (response.status, response.content) == (400, b'{"error":"bad"}')  # any status comes back
    await upstream.aclose()


async def test_every_attempt_gets_its_own_request_id() -> None:
    upstream = upstream_over(httpx.MockTransport(lambda request: httpx.Response(200)))
    ids = {upstream.attempt_id("same") for _ in range(100)}
    assert len(ids) == 100


async def test_a_stream_asks_for_events_and_comes_back_unread() -> None:
    chunks = [b"data: 1\n\n", b"data: [DONE]\n\n"]

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "text/event-stream"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Parts(chunks))

    upstream = upstream_over(httpx.MockTransport(answer))
    response = await upstream.open_stream(f"{BASE}/chat/completions", b"{}", "r-1")
    assert response.content_type == "text/event-stream"
    assert [chunk async for chunk in response] == chunks


class Parts(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for part in self.parts:
            yield part


@pytest.mark.parametrize(
    ("answer", "listed"),
    [
        (httpx.Response(200, json={"data": [{"id": "m"}]}), ("m",)),
        (httpx.Response(200, json={"data": [{"name": "no id"}]}), None),
        (httpx.Response(200, content=b"not json"), None),
        (httpx.Response(200, json={"object": "list"}), None),
        (httpx.Response(503, json={"data": [{"id": "m"}]}), None),
    ],
)
async def test_a_model_list_is_kept_only_when_usable(answer: httpx.Response, listed: tuple[str, ...] | None) -> None:
    upstream = upstream_over(httpx.MockTransport(lambda request: answer))
    models = await upstream.list_models(BASE)
    assert (None if models is None else tuple(model["id"] for model in models.models)) == listed


async def test_an_unreachable_upstream_lists_nothing_and_probes_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    upstream = upstream_over(httpx.MockTransport(refuse))
    assert await upstream.list_models(BASE) is None
    assert await upstream.probe(BASE, 1.0) == "unavailable"
    assert not await upstream.is_up(BASE)


@pytest.mark.parametrize(("status", "view"), [(200, "ok"), (404, "unknown"), (500, "unavailable")])
async def test_the_probe_reads_the_status_of_models(status: int, view: str) -> None:
    upstream = upstream_over(httpx.MockTransport(lambda request: httpx.Response(status)))
    assert await upstream.probe(BASE, 1.0) == view


async def test_a_probe_has_one_deadline_for_all_of_it() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    upstream = upstream_over(httpx.MockTransport(slow))
    async with asyncio.timeout(2):
        assert await upstream.probe(BASE, 0.05) == "unavailable"


@pytest.mark.parametrize(
    ("error", "mapped", "words"),
    [
        (httpx.ConnectTimeout("t"), UpstreamTimeout, "timed out connecting to"),
        (httpx.ReadTimeout("t"), UpstreamTimeout, "timed out waiting for"),
        (httpx.WriteTimeout("t"), UpstreamTimeout, "timed out sending to"),
        (httpx.ConnectError("refused"), UpstreamUnavailable, "unreachable (refused)"),
        (httpx.ReadError(""), UpstreamUnavailable, "unreachable (ReadError)"),
        (httpx.RemoteProtocolError("cut"), UpstreamProtocolError, "broke the connection (cut)"),
        (httpx.DecodingError("bad gzip"), UpstreamError, "failed (bad gzip)"),
    ],
)
def test_transport_errors_map_to_gateway_errors_naming_the_route(
    error: Exception, mapped: type[Exception], words: str
) -> None:
    gateway_error = map_transport_error(error, "tiny")
    assert type(gateway_error) is mapped
    assert words in str(gateway_error) and "'tiny'" in str(gateway_error)


async def test_close_after_end_gives_a_read_response_back_at_once() -> None:
    response = UpstreamResponse.whole(200, [], b"data: [DONE]\n\n")
    close_after_end(response, within=1.0)
    assert response.is_closed
