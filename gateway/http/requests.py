"""
The gateway's HTTP request: Sanic's, with one slotted `RequestState` as its `ctx`, and the body of
a non-streaming route read more cheaply.

Sanic reads such a body before the handler runs with `b"".join([data async for data in stream])`:
an async generator per request, which the event loop registers in a weak set and finalises, about
3% of a relayed request's CPU. Here the same chunks are read by calling `read()` until the body is
complete, as the generator does. Size limits, `Expect: 100-continue` and chunked bodies stay
Sanic's (`read()` handles them).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sanic import Request as SanicRequest

from gateway.admission.ratelimit import Decision

__all__ = ["Request", "RequestState"]


class RequestState(SimpleNamespace):
    """What the gateway learns about a request while serving it, read once when it is recorded.

    Written in order along the request path: the request middleware (`started`, `request_id`),
    the guard (`client_ip`, `rate`), the proxy (`route_key`, `model`, `upstream_status`,
    `streaming`), the error handler or a stream's in-band error (`error`), and `access.py`
    (`recorded`). Every field has its default from the start, so a request that fails early (one
    Sanic refuses before any middleware runs) is recorded the same way. A `SimpleNamespace`, as
    Sanic types every request's `ctx`; the slots make the gateway's own fields plain and fast.
    """

    __slots__ = (  # noqa: RUF023 (in the order the request path writes them)
        "started",
        "request_id",
        "client_ip",
        "rate",
        "route_key",
        "model",
        "upstream_status",
        "streaming",
        "error",
        "recorded",
    )

    def __init__(self) -> None:
        self.started: float | None = None
        self.request_id: str | None = None
        self.client_ip: str | None = None
        self.rate: Decision | None = None
        self.route_key: str | None = None
        self.model: str | None = None
        self.upstream_status: int | None = None
        self.streaming = False
        self.error: str | None = None
        self.recorded = False


class Request(SanicRequest[Any, RequestState]):
    __slots__ = ()

    @staticmethod
    def make_context() -> RequestState:
        return RequestState()

    async def receive_body(self) -> None:
        """Receive `request.body`, if not received already (Sanic's documented override)."""
        if self.body:
            return
        stream = self.stream
        chunks: list[bytes] = []
        while stream is not None and stream.request_body:
            # Sanic's Http has read(); the Stream protocol it is typed as does not.
            data = await stream.read()  # type: ignore[attr-defined]
            if data:
                chunks.append(data)
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
