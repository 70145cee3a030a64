"""
The transport seam over any httpx transport, through httpx's public API only: FastTransport's
fallback for https upstreams, and what a test's `httpx.MockTransport` (or respx) plugs into.

    transport = HttpxTransport(httpx.AsyncHTTPTransport(trust_env=False))
"""

from __future__ import annotations

import httpx

from gateway.upstream.base import RequestBody, Target, Timeouts
from gateway.upstream.response import UpstreamResponse

__all__ = ["HttpxTransport"]


class _HttpxBody:
    """An httpx response's raw (undecoded) body: UpstreamResponse decodes it as FastTransport's."""

    __slots__ = ("_chunks", "_done", "_response")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_raw()
        self._done = False

    def __aiter__(self) -> _HttpxBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done = True
            await self._response.aclose()
            raise
        except BaseException:
            await self._response.aclose()
            raise

    async def aclose(self) -> None:
        await self._response.aclose()

    def release_if_read(self) -> bool:
        return self._done


class HttpxTransport:
    """Sends through `transport` (an `httpx.AsyncBaseTransport`); its errors are httpx's."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def send(
        self, method: str, target: Target, headers: list[tuple[bytes, bytes]], body: RequestBody, timeouts: Timeouts
    ) -> UpstreamResponse:
        timeout = {
            "connect": timeouts.connect,
            "read": timeouts.read,
            "write": timeouts.write,
            "pool": timeouts.connect,
        }
        request = httpx.Request(method, target.url, headers=headers, content=body, extensions={"timeout": timeout})
        response = await self.transport.handle_async_request(request)
        try:
            content = response.content  # a response built from `content=` is read (and decoded) already
        except httpx.ResponseNotRead:
            pass
        else:
            return UpstreamResponse.whole(
                response.status_code, response.headers.raw, content, content_type=response.headers.get("content-type")
            )
        return UpstreamResponse(
            response.status_code,
            response.headers.raw,
            _HttpxBody(response),
            content_type=response.headers.get("content-type"),
            reason=response.extensions.get("reason_phrase", b""),
            content_encoding=response.headers.get("content-encoding", "").encode("latin-1") or None,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()
