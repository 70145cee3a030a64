"""
What an upstream answered: the gateway's own small response type, the same whichever transport
carried it (`FastTransport`, or an httpx transport through `HttpxTransport`).

    response = await transport.send("POST", target, headers, body, timeouts)
    response.status, response.content_type     # from the head
    async for chunk in response: ...            # the body as it arrives (decoded, if compressed)
    await response.aread()                      # or all of it
    await response.aclose()                     # early: closes the upstream connection

A body is a `Body`: an async iterator of raw chunks with `aclose()` and `release_if_read()`. Closing
one before its end closes its connection, which is how vLLM learns that a client left.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import httpx

__all__ = ["Body", "ReadBody", "UpstreamResponse"]


class Body(Protocol):
    """The body of one response as its transport delivers it."""

    def __aiter__(self) -> Body: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None:
        """Stop now: a connection that did not deliver the whole body is closed, not reused."""

    def release_if_read(self) -> bool:
        """Give the connection back now if the whole body has arrived and been read."""


class ReadBody:
    """A body that came whole with its head: nothing to read, nothing held."""

    __slots__ = ("_content",)

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    def __aiter__(self) -> ReadBody:
        return self

    async def __anext__(self) -> bytes:
        content, self._content = self._content, None
        if not content:
            raise StopAsyncIteration
        return content

    async def aclose(self) -> None:
        self._content = None

    def release_if_read(self) -> bool:
        return True


class _Decoder:
    """gzip or deflate, as httpx decodes them: a body we asked not to compress may still be."""

    __slots__ = ("_inflate",)

    def __init__(self, encoding: bytes) -> None:
        # 32 + MAX_WBITS: gzip or zlib framing, told apart by the header; raw deflate otherwise.
        wbits = zlib.MAX_WBITS | 32 if encoding.strip().lower() in (b"gzip", b"x-gzip") else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> bytes:
        try:
            return self._inflate.decompress(data)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the upstream body could not be decompressed: {exc}") from exc

    def flush(self) -> bytes:
        try:
            return self._inflate.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(f"the upstream body could not be decompressed: {exc}") from exc


class UpstreamResponse:
    """Status, headers as received, and the body (read whole with `aread`, or iterated)."""

    __slots__ = ("_body", "_content", "_decoder", "content_type", "headers", "is_closed", "reason", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        *,
        content_type: str | None = None,
        reason: bytes = b"",
        content: bytes | None = None,
        content_encoding: bytes | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # (name as sent, value), in order, repeats kept
        self.content_type = content_type  # the first Content-Type, found while the head was parsed
        self._body = body
        self._content = content  # the whole body, once known
        identity = content_encoding is None or content_encoding.strip().lower() in (b"", b"identity")
        self._decoder = None if identity else _Decoder(content_encoding)  # type: ignore[arg-type]
        self.is_closed = False

    @classmethod
    def whole(
        cls, status: int, headers: list[tuple[bytes, bytes]], content: bytes, *, content_type: str | None = None,
        reason: bytes = b"",
    ) -> UpstreamResponse:  # fmt: skip
        """A response whose body came with its head (as most JSON answers do): read already."""
        return cls(status, headers, ReadBody(content), content_type=content_type, reason=reason, content=content)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    @property
    def content(self) -> bytes:
        """The whole body; only once it was read (`aread`, or it came with the head)."""
        if self._content is None:
            raise RuntimeError("the upstream body has not been read: await aread() first")
        return self._content

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        decoder = self._decoder
        try:
            while True:
                try:
                    chunk = await self._body.__anext__()
                except StopAsyncIteration:
                    self.is_closed = True
                    if decoder is not None and (tail := decoder.flush()):
                        self._decoder = None
                        return tail
                    raise
                if decoder is None:
                    return chunk
                if decoded := decoder.decode(chunk):
                    return decoded
        except httpx.DecodingError:
            await self.aclose()
            raise

    async def aread(self) -> bytes:
        """Read the rest of the body; the connection goes back to the pool when it allows."""
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self])
        else:
            await self._body.aclose()  # read once, either way: iterating after this gives nothing
        return self._content

    async def aclose(self) -> None:
        self.is_closed = True
        await self._body.aclose()

    def release_if_read(self) -> bool:
        """Closed at once if no unread part of the body is left (True); False when more is to come."""
        if self._body.release_if_read():
            self.is_closed = True
            return True
        return False
