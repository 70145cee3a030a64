"""HttpxTransport: the transport seam over any httpx transport (https upstreams, tests' mocks)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx

from gateway.upstream.base import Target, Timeouts
from gateway.upstream.httpx_transport import HttpxTransport

TARGET = Target.parse("https://vllm.example/v1/chat/completions")


class Parts(httpx.AsyncByteStream):
    """A body that arrives in parts and says when it was closed."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = parts
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part

    async def aclose(self) -> None:
        self.closed = True


async def test_the_request_goes_out_as_given_with_the_timeouts_per_phase() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"ok": True}, headers={"x-a": "1"})

    transport = HttpxTransport(httpx.MockTransport(handler))
    response = await transport.send(
        "POST", TARGET, [(b"x-request-id", b"r-1")], b'{"m":1}', Timeouts(connect=1.0, read=2.0, write=3.0)
    )
    (request,) = seen
    assert (request.method, str(request.url), request.content) == ("POST", TARGET.url, b'{"m":1}')
    assert request.headers["x-request-id"] == "r-1" and request.headers["host"] == "vllm.example"
    assert request.extensions["timeout"] == {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 1.0}
    assert (response.status, response.content_type, response.header("x-a")) == (201, "application/json", "1")
    assert response.content == b'{"ok":true}'  # a mock's answer is read already
    await transport.aclose()


async def test_a_streamed_answer_is_relayed_part_by_part_and_closes_at_its_end() -> None:
    body = Parts(b"data: 1\n\n", b"data: [DONE]\n\n")
    transport = HttpxTransport(
        httpx.MockTransport(
            lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
        )
    )
    response = await transport.send("POST", TARGET, [], b"{}", Timeouts())
    assert [chunk async for chunk in response] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert body.closed and response.release_if_read()


async def test_an_early_close_closes_the_httpx_response() -> None:
    body = Parts(b"data: 1\n\n", b"data: 2\n\n")
    transport = HttpxTransport(httpx.MockTransport(lambda request: httpx.Response(200, stream=body)))
    response = await transport.send("POST", TARGET, [], b"{}", Timeouts())
    assert await anext(aiter(response)) == b"data: 1\n\n"
    assert not response.release_if_read()
    await response.aclose()
    assert body.closed


async def test_a_compressed_stream_is_decoded_once_by_the_response() -> None:
    packed = gzip.compress(b'{"packed":true}')
    transport = HttpxTransport(
        httpx.MockTransport(
            lambda request: httpx.Response(
                200, headers={"content-encoding": "gzip"}, stream=Parts(packed[:5], packed[5:])
            )
        )
    )
    response = await transport.send("GET", TARGET, [], None, Timeouts())
    assert await response.aread() == b'{"packed":true}'
