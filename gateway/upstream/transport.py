"""
A lean HTTP/1.1 client transport for the gateway's plain-http hops to vLLM.

    transport = FastTransport(max_keepalive=1024, keepalive_expiry=4.0)
    response = await transport.send("POST", Target.parse(url), headers, body, Timeouts(read=60.0))

httpx's default transport (httpcore + h11) would spend most of the gateway's CPU per relayed
request, and aiohttp's client 1.4 to 1.9 times this one's (docs/performance.md, "The upstream
client"). The wire work is one `asyncio.Protocol` per TCP connection (connection.py), one `bytes`
join for the request head, one future (and one timer when a timeout applies) per wait.

Connections are pooled per (host, port): no cap on open connections (every open SSE stream holds
one), idle ones reused last-in first-out, at most `max_keepalive` idle per origin, none reused
after `keepalive_expiry` seconds idle or once the server closed it (EOF or `is_closing()`).
https (or any other scheme) goes to `fallback`.

A response body that is closed before its end, or whose reader is cancelled or fails, closes its
TCP connection at once: that is how vLLM learns that a client left and aborts the generation.
Only a completely read response that allows keep-alive returns its connection to the pool.

Errors are httpx's, as httpcore would raise them: ConnectError / ConnectTimeout while connecting,
WriteTimeout, ReadTimeout, ReadError, RemoteProtocolError (see connection.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

import httpx

from gateway.upstream.base import RequestBody, Target, Timeouts, Transport
from gateway.upstream.connection import Connection
from gateway.upstream.httpx_transport import HttpxTransport
from gateway.upstream.response import UpstreamResponse

__all__ = ["FastTransport"]

# Bodies up to this size are sent in the same write as the head.
_INLINE_BODY_MAX = 64 * 1024
# A connection idle for longer gets a poll(2) before reuse: a server's idle timeout may have closed
# it a moment ago, before the event loop saw the EOF. Busier connections skip the system call.
STALE_CHECK_AFTER = 1.0

_METHODS = {m: m.encode() for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_HTTP11 = b" HTTP/1.1\r\n"
_COLON = b": "
_CRLF = b"\r\n"


class _ResponseBody:
    """The body of one response, as it arrives; closing it early closes the connection."""

    __slots__ = ("_conn", "_owner", "_timeout")

    def __init__(self, conn: Connection, timeout: float | None, owner: FastTransport) -> None:
        self._conn: Connection | None = conn
        self._timeout = timeout
        self._owner = owner

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        while True:
            chunks = conn.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                conn.buffered = 0
                if conn.reading_paused:
                    conn.reading_paused = False
                    if not conn.closed:
                        conn.transport.resume_reading()
                return data
            if conn.complete:
                self._conn = None
                self._owner._release(conn)
                raise StopAsyncIteration
            error = conn.error
            if error is not None:
                self._conn = None
                conn.abort()
                raise error
            try:
                await conn.wait(self._timeout)
            except BaseException:
                self._conn = None
                conn.abort()
                raise

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            if conn.complete:
                self._owner._release(conn)
            else:
                conn.abort()

    def release_if_read(self) -> bool:
        """Give the connection back now if the whole body has arrived and been read."""
        conn = self._conn
        if conn is not None:
            if conn.chunks or not conn.complete:
                return False
            self._conn = None
            self._owner._release(conn)
        return True


class FastTransport:
    """
    HTTP/1.1 over asyncio for http:// URLs; other schemes go to `fallback` (by default httpx's own
    transport, through `HttpxTransport`, with the same keep-alive settings and no connection cap).
    """

    def __init__(
        self,
        *,
        max_keepalive: int = 1024,
        keepalive_expiry: float = 30.0,
        fallback: Transport | None = None,
    ) -> None:
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._fallback = fallback
        self._idle: dict[tuple[str, int], dict[Connection, None]] = {}
        self._conns: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(
        self, method: str, target: Target, headers: list[tuple[bytes, bytes]], body: RequestBody, timeouts: Timeouts
    ) -> UpstreamResponse:
        if target.scheme != "http":
            return await self._fallback_transport().send(method, target, headers, body, timeouts)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        head = [
            _METHODS.get(method) or method.encode("ascii"),
            b" ",
            target.path,
            _HTTP11,
            b"Host: ",
            target.netloc,
            _CRLF,
        ]
        for name, value in headers:
            head += (name, _COLON, value, _CRLF)
        if isinstance(body, bytes):
            head += (b"Content-Length: %d\r\n\r\n" % len(body),)
        elif body is not None:
            head.append(b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            head.append(_CRLF)
        key = (target.host, target.port)
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = {}

        conn = None
        while idle:
            candidate = idle.popitem()[0]
            if candidate.closed or candidate.transport.is_closing():
                candidate.abort()
                continue
            idle_for = loop.time() - candidate.idle_since
            if idle_for > self.keepalive_expiry:
                candidate.abort()  # and every older one is expired too, so the loop drains them
            elif idle_for > STALE_CHECK_AFTER and candidate.readable():
                candidate.abort()
            else:
                conn = candidate
                break
        if conn is None:
            conn = await self._connect(loop, target.host, target.port, idle, timeouts.connect)

        read_timeout = timeouts.read
        try:
            conn.start(method == "HEAD")
            transport = conn.transport
            if isinstance(body, bytes) and len(body) <= _INLINE_BODY_MAX:
                head.append(body)
                transport.write(b"".join(head))
            else:
                transport.write(b"".join(head))
                if isinstance(body, bytes):
                    transport.write(body)
                elif body is not None:
                    await self._send_chunked(conn, body, timeouts.write)
            if conn.write_paused:
                await conn.drain(timeouts.write)
            while not conn.headers_done:
                error = conn.error
                if error is not None:
                    raise error
                await conn.wait(read_timeout)
        except BaseException:
            conn.abort()
            raise
        if conn.complete and conn.content_encoding is None:
            # The whole body came with the head, as most JSON answers do: the response is built
            # read, and the connection goes back to the pool at once.
            chunks = conn.chunks
            content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            response = UpstreamResponse.whole(
                conn.status, conn.headers, content, content_type=conn.content_type, reason=conn.reason
            )
            self._release(conn)
            return response
        return UpstreamResponse(
            conn.status, conn.headers, _ResponseBody(conn, read_timeout, self), content_type=conn.content_type,
            reason=conn.reason, content_encoding=conn.content_encoding,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Close every connection, idle or not (a response still being read gets a ReadError)."""
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()

    # internals

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, idle: dict[Connection, None],
        timeout: float | None,
    ) -> Connection:  # fmt: skip
        conns = self._conns
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: Connection(loop, idle, conns), host, port)
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(str(exc) or "timed out connecting to the upstream") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    async def _send_chunked(self, conn: Connection, parts: AsyncIterable[bytes], timeout: float | None) -> None:
        transport = conn.transport
        async for part in parts:
            if conn.closed:
                return  # the server is gone (or answered early); reading the response tells
            if part:
                transport.write(b"%x\r\n%b\r\n" % (len(part), part))
                if conn.write_paused:
                    await conn.drain(timeout)
        if not conn.closed:
            transport.write(b"0\r\n\r\n")

    def _release(self, conn: Connection) -> None:
        """Back to the pool after a complete response, or closed if it can't be reused."""
        conn._stop_read_timer()
        conn.active = False
        conn.chunks.clear()
        conn.buffered = 0
        if not conn.keep_alive or conn.closed or conn.transport.is_closing() or conn.loop is not self._loop:
            conn.abort()
            return
        if conn.reading_paused:
            conn.reading_paused = False
            conn.transport.resume_reading()
        now = conn.loop.time()
        conn.idle_since = now
        idle = conn.idle
        idle[conn] = None
        if len(idle) > self.max_keepalive:
            next(iter(idle)).abort()  # the longest idle one goes
        elif len(idle) > 1:
            oldest = next(iter(idle))
            if now - oldest.idle_since > self.keepalive_expiry:
                oldest.abort()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections belong to the loop that opened them; those of another loop are forgotten.
        self._loop = loop
        self._idle = {}
        self._conns = set()

    def _fallback_transport(self) -> Transport:
        if self._fallback is None:
            limits = httpx.Limits(
                max_connections=None,
                max_keepalive_connections=self.max_keepalive,
                keepalive_expiry=self.keepalive_expiry,
            )
            self._fallback = HttpxTransport(httpx.AsyncHTTPTransport(limits=limits, trust_env=False))
        return self._fallback
