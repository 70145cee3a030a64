"""
A lean HTTP/1.1 transport for httpx, for the gateway's plain-http hops to vLLM.

    client = httpx.AsyncClient(transport=FastTransport(max_keepalive=1024, keepalive_expiry=30.0), ...)

httpx's default transport (httpcore + h11) spends most of the gateway's CPU per relayed request.
This one keeps httpx's client API and replaces the wire work: one `asyncio.Protocol` per TCP
connection, httptools' C parser (llhttp) feeding a small per-connection state through callbacks,
one `bytes` join for the request head, one future (and one timer when a timeout applies) per wait.

Connections are pooled per (host, port): no cap on open connections (every open SSE stream holds
one), idle ones reused last-in first-out, at most `max_keepalive` idle per origin, none reused
after `keepalive_expiry` seconds idle or once the server closed it (EOF or `is_closing()`).
https (or any other scheme) goes to `fallback`, httpx's default transport unless given.

A response body that is closed before its end, or whose reader is cancelled or fails, closes its
TCP connection at once: that is how vLLM learns that a client left and aborts the generation.
Only a completely read response that allows keep-alive returns its connection to the pool.

Errors are httpx's, as httpcore would raise them: ConnectError / ConnectTimeout while connecting,
WriteTimeout, ReadTimeout (between two reads, and while waiting for the headers), ReadError for a
reset, RemoteProtocolError for a server that closed without answering, cut a body short or sent
malformed HTTP.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any

import httptools
import httpx

__all__ = ["FastTransport", "content_type_of", "headers_from_triples", "release_if_read"]

# Above this many unread body bytes, the socket stops being read until the consumer catches up.
READ_HIGH_WATER = 256 * 1024
# Bodies up to this size are sent in the same write as the head.
_INLINE_BODY_MAX = 64 * 1024
# A connection idle for longer gets a poll(2) before reuse: a server's idle timeout may have closed
# it a moment ago, before the event loop saw the EOF. Busier connections skip the system call.
STALE_CHECK_AFTER = 1.0

_NO_TIMEOUTS: dict[str, float | None] = {}
_TIMED_OUT = object()  # the result of a wait whose timer fired
_METHODS = {m: m.encode() for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_HTTP11 = b" HTTP/1.1\r\n"
_COLON = b": "
_CRLF = b"\r\n"
_EXTENSIONS_HTTP11 = b"HTTP/1.1"
_NO_RESPONSE = "Server disconnected without sending a response."


def _fast_headers_work() -> bool:
    """Whether an `httpx.Headers` can be built straight from (name, lower-cased name, value) triples.

    That is httpx's internal layout (0.28); it saves a normalisation call per header and response.
    Checked once against the public constructor, so that another layout falls back to the latter.
    """
    raw = [(b"Content-Type", b"text/plain"), (b"X-Dup", b"1"), (b"x-dup", b"\xc3\xa9")]
    try:
        fast = headers_from_triples([(name, name.lower(), value) for name, value in raw])
        slow = httpx.Headers(raw)
        copied = httpx.Response(200, headers=fast, stream=httpx.AsyncByteStream()).headers
        return (
            vars(fast).keys() == vars(slow).keys()
            and fast.raw == slow.raw == copied.raw
            and fast.multi_items() == slow.multi_items() == copied.multi_items()
            and fast.get_list("x-dup") == slow.get_list("x-dup")
        )
    except Exception:  # noqa: BLE001  # pragma: no cover - another httpx
        return False


_new_headers = httpx.Headers.__new__


def headers_from_triples(items: list[tuple[bytes, ...]]) -> httpx.Headers:
    """An `httpx.Headers` over (name as sent, lower-cased name, value) triples, as they are.

    httpx's own layout (0.28), without its normalisation of every header; valid only where that
    layout is httpx's (`_fast_headers_work()`, or a check of the caller's own).
    """
    headers = _new_headers(httpx.Headers)
    headers._list = items  # type: ignore[attr-defined,assignment]
    headers._encoding = None  # type: ignore[attr-defined]
    return headers


_FAST_HEADERS = _fast_headers_work()


def content_type_of(response: httpx.Response) -> str | None:
    """A response's (first) `Content-Type`, or None.

    One scan of the header list: httpx's `headers.get` first decodes every name and value to
    choose an encoding, then every value again, about 2.5 µs per response on the relay's path.
    """
    if not _FAST_HEADERS:  # pragma: no cover - another httpx
        return response.headers.get("content-type")
    for _, name, value in response.headers._list:  # type: ignore[attr-defined]
        if name == b"content-type":
            return value.decode("latin-1")
    return None


def _preload_works() -> bool:
    """Whether a response whose `_content` is set counts as read (httpx 0.28 `read()`/`aread()`)."""
    try:
        body = b'{"ok":true}'
        response = httpx.Response(200, stream=httpx.ByteStream(b"unread"))
        response._content = body
        return response.read() is body and response.content is body and response.json() == {"ok": True}
    except Exception:  # noqa: BLE001  # pragma: no cover - another httpx
        return False


_PRELOAD_WORKS = _preload_works()


def _response_headers(items: list[tuple[bytes, ...]]) -> Any:
    """What httpx.Response(headers=...) gets: a ready Headers, or the (name, value) pairs."""
    return headers_from_triples(items) if _FAST_HEADERS else items


def _triples(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:  # pragma: no cover - another httpx
    return [(name, name, value) for name, value in pairs]


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class _Connection(asyncio.Protocol):
    """One TCP connection to an origin, and the state of the exchange under way on it."""

    __slots__ = (
        "active", "buffered", "chunks", "closed", "complete", "conns", "drain_waiter", "encoded", "error", "fd",
        "got_bytes", "head_only", "headers", "headers_done", "idle", "idle_since", "keep_alive", "loop",
        "parser", "read_deadline", "read_timer", "reading_paused", "reason", "status", "transport", "waiter",
        "write_paused",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: dict[_Connection, None], conns: set[_Connection]):
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.fd = -1
        self.parser = httptools.HttpResponseParser(self)
        self.idle = idle  # the idle connections of this origin, newest last
        self.conns = conns  # every open connection of the transport
        self.closed = False  # lost, EOF seen or aborted: never reuse
        self.idle_since = 0.0
        self.active = False  # an exchange is under way
        self.head_only = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, ...]] = []  # (name, value) or (name, lower-cased name, value)
        self.headers_done = False
        self.encoded = False  # the body has a Content-Encoding: httpx's decoders must read it
        self.complete = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.got_bytes = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.read_deadline = 0.0
        self.read_timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[Any] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.conns.add(self)

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            # Bytes nobody asked for: the connection can't be trusted for another exchange.
            self.keep_alive = False
            if not self.active:
                self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols, which is not supported"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
        else:
            if self.buffered > READ_HIGH_WATER and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        self.closed = True
        self.idle.pop(self, None)
        return False  # let the transport close itself; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.idle.pop(self, None)
        self.conns.discard(self)
        self._stop_read_timer()
        if self.active and not self.complete and self.error is None:
            if exc is not None:
                self.error = httpx.ReadError(str(exc) or type(exc).__name__)
            elif not self.got_bytes:
                self.error = httpx.RemoteProtocolError(_NO_RESPONSE)
            elif not self.headers_done:
                self.error = httpx.RemoteProtocolError("Server disconnected while sending the response headers.")
            elif self._ends_at_eof():
                self.complete = True
                self.keep_alive = False
            else:
                self.error = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second response in the same read: stop parsing, drop the connection
            raise httptools.HttpParserError("data after the end of the response")

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    if _FAST_HEADERS:

        def on_header(self, name: bytes, value: bytes) -> None:
            lowered = name.lower()
            self.headers.append((name, lowered, value))
            if lowered == b"content-encoding":
                self.encoded = True

    else:  # pragma: no cover - another httpx

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))
            if name.lower() == b"content-encoding":
                self.encoded = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (100 Continue, 103 Early Hints): the real one follows
            self.headers = []
            return
        self.status = status
        self.headers_done = True
        if self.head_only:  # llhttp can't know that a HEAD response has no body
            self.complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    # the exchange

    def start(self, head_only: bool) -> None:
        self.active = True
        self.head_only = head_only
        self.status = 0
        self.headers = []
        self.headers_done = self.complete = self.keep_alive = self.got_bytes = self.encoded = False
        self.buffered = 0
        self.error = None

    async def wait(self, timeout: float | None) -> None:
        """Until data_received or connection_lost has news; ReadTimeout after `timeout` seconds."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        if timeout is None:
            await waiter
            return
        # One timer per connection, not one per wait: a stream waits once per chunk. The timer
        # stays armed across waits and only fires at the earliest deadline set meanwhile; then
        # it expires the wait under way if its deadline has passed, or is armed again for it.
        self.read_deadline = self.loop.time() + timeout
        if self.read_timer is None:
            self.read_timer = self.loop.call_at(self.read_deadline, self._read_deadline_due)
        result = await waiter
        if result is _TIMED_OUT and self.waiter is waiter:  # else data came in the same loop iteration
            self.waiter = None
            raise httpx.ReadTimeout("timed out waiting for the upstream response")

    def _read_deadline_due(self) -> None:
        self.read_timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms the timer again
        if self.loop.time() >= self.read_deadline:
            waiter.set_result(_TIMED_OUT)
        else:
            self.read_timer = self.loop.call_at(self.read_deadline, self._read_deadline_due)

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    async def drain(self, timeout: float | None) -> None:
        while self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self.drain_waiter = waiter
            timer = self.loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                result = await waiter
            finally:
                if timer is not None:
                    timer.cancel()
            if result is _TIMED_OUT:
                raise httpx.WriteTimeout("timed out sending the request to the upstream")

    def readable(self) -> bool:
        """Whether the idle socket has an EOF (or stray bytes) the event loop has not handled yet."""
        if self.fd < 0:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    def abort(self) -> None:
        """Close the socket now (unsent bytes are dropped) and wake whoever waits on it."""
        self.closed = True
        self.idle.pop(self, None)
        if self.active and self.error is None and not self.complete:
            self.error = httpx.ReadError("the response was closed")
        self.active = False
        if self.transport is not None:
            self.transport.abort()
        self._stop_read_timer()
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.closed = True
        self.transport.abort()

    def _wake(self) -> None:
        for waiter in (self.waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.waiter = self.drain_waiter = None

    def _ends_at_eof(self) -> bool:
        """Whether the response has neither Content-Length nor chunked framing (rare, so scanned late)."""
        for item in self.headers:
            lowered, value = item[0].lower(), item[-1]
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True


class _ResponseBody(httpx.AsyncByteStream):
    """The body of one response, as it arrives; closing it early closes the connection."""

    __slots__ = ("_conn", "_owner", "_timeout")

    def __init__(self, conn: _Connection, timeout: float | None, owner: FastTransport) -> None:
        self._conn: _Connection | None = conn
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


def release_if_read(response: httpx.Response) -> bool:
    """Close `response` at once if it holds no unread part of its body.

    True when it holds no connection any more: the body's end had arrived and been read (the
    connection goes back to the pool now), or the body came with the head. False when more is
    to come, or when the stream is not this transport's.
    """
    stream = response.stream
    if type(stream) is _ResponseBody:
        released = stream.release_if_read()
    else:
        released = type(stream) is httpx.ByteStream  # read with its head: nothing held
    if released:
        response.is_closed = True
    return released


class FastTransport(httpx.AsyncBaseTransport):
    """
    HTTP/1.1 over asyncio for http:// URLs; other schemes go to `fallback` (by default an
    `httpx.AsyncHTTPTransport` with the same keep-alive settings and no connection cap).

    Pass the pool settings here: an `httpx.AsyncClient` ignores its `limits` when given a transport.
    """

    def __init__(
        self,
        *,
        max_keepalive: int = 1024,
        keepalive_expiry: float = 30.0,
        fallback: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._fallback = fallback
        self._idle: dict[tuple[bytes, int], dict[_Connection, None]] = {}
        self._conns: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            return await self._fallback_transport().handle_async_request(request)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        timeouts = request.extensions.get("timeout") or _NO_TIMEOUTS
        method = request.method
        head = [_METHODS.get(method) or method.encode("ascii"), b" ", url.raw_path, _HTTP11]
        # httpx's own (name, lower-cased name, value) list when its layout is known: `.raw`
        # would copy it into pairs first.
        for name, _, value in request.headers._list if _FAST_HEADERS else _triples(request.headers.raw):  # type: ignore[attr-defined]
            head += (name, _COLON, value, _CRLF)
        head.append(_CRLF)
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None
        host = url.raw_host
        port = url.port or 80
        idle = self._idle.get((host, port))
        if idle is None:
            idle = self._idle[(host, port)] = {}

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
            conn = await self._connect(loop, host, port, idle, timeouts.get("connect"))

        read_timeout = timeouts.get("read")
        try:
            conn.start(method == "HEAD")
            transport = conn.transport
            if body is not None and len(body) <= _INLINE_BODY_MAX:
                head.append(body)
                transport.write(b"".join(head))
            else:
                transport.write(b"".join(head))
                if body is not None:
                    transport.write(body)
                else:
                    await self._send_stream(conn, request, timeouts.get("write"))
            if conn.write_paused:
                await conn.drain(timeouts.get("write"))
            while not conn.headers_done:
                error = conn.error
                if error is not None:
                    raise error
                await conn.wait(read_timeout)
        except BaseException:
            conn.abort()
            raise
        extensions = {"http_version": _EXTENSIONS_HTTP11, "reason_phrase": conn.reason}
        if _PRELOAD_WORKS and conn.complete and not conn.encoded:
            # The whole body came with the head, as most JSON answers do: the response is built
            # read, as httpx builds one from `content=` (no decoder chain to run it through), and
            # the connection goes back to the pool at once.
            chunks = conn.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            response = httpx.Response(
                conn.status,
                headers=_response_headers(conn.headers),
                stream=httpx.ByteStream(body),
                extensions=extensions,
            )
            response._content = body
            self._release(conn)
            return response
        return httpx.Response(
            conn.status,
            headers=_response_headers(conn.headers),
            stream=_ResponseBody(conn, read_timeout, self),
            extensions=extensions,
        )

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
        self, loop: asyncio.AbstractEventLoop, host: bytes, port: int, idle: dict[_Connection, None],
        timeout: float | None,
    ) -> _Connection:  # fmt: skip
        conns = self._conns
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, idle, conns), host.decode("ascii"), port
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(str(exc) or "timed out connecting to the upstream") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    async def _send_stream(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        transport = conn.transport
        async for chunk in request.stream:  # type: ignore[union-attr]
            if conn.closed:
                return  # the server is gone (or answered early); reading the response tells
            if not chunk:
                continue
            if chunked:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                transport.write(chunk)
            if conn.write_paused:
                await conn.drain(timeout)
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    def _release(self, conn: _Connection) -> None:
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

    def _fallback_transport(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=self.max_keepalive,
                    keepalive_expiry=self.keepalive_expiry,
                ),
                trust_env=False,
            )
        return self._fallback
