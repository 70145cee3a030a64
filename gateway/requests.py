"""
The gateway's HTTP request: Sanic's, with the body of a non-streaming route read more cheaply.

Sanic reads such a body before the handler runs with `b"".join([data async for data in stream])`:
an async generator per request, which the event loop registers in a weak set and finalises, about
3% of a relayed request's CPU. Here the same chunks are read by calling `read()` until the body is
complete, as the generator does. Size limits, `Expect: 100-continue` and chunked bodies stay
Sanic's (`read()` handles them).
"""

from __future__ import annotations

from sanic import Request as SanicRequest

__all__ = ["Request"]


class Request(SanicRequest):
    __slots__ = ()

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
