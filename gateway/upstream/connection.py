"""
One pooled HTTP/1.1 connection to an upstream: an `asyncio.Protocol` fed by httptools' C parser
(llhttp) through callbacks, holding the state of the exchange under way on it.

The pool (gateway/upstream/transport.py) starts an exchange, writes the request head and waits;
the callbacks fill in status, headers and body chunks and wake the one waiter. A connection is
reused only after a complete response that allows keep-alive; anything unexpected (bytes nobody
asked for, a second response, a reset) closes it.

Errors are httpx's, as httpcore would raise them: ReadTimeout (between two reads, and while
waiting for the headers), WriteTimeout, ReadError for a reset, RemoteProtocolError for a server
that closed without answering, cut a body short or sent malformed HTTP.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any

import httptools
import httpx

__all__ = ["READ_HIGH_WATER", "Connection"]

# Above this many unread body bytes, the socket stops being read until the consumer catches up.
READ_HIGH_WATER = 256 * 1024

_TIMED_OUT = object()  # the result of a wait whose timer fired
_NO_RESPONSE = "Server disconnected without sending a response."


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class Connection(asyncio.Protocol):
    """One TCP connection to an origin, and the state of the exchange under way on it."""

    __slots__ = (
        "active", "buffered", "chunks", "closed", "complete", "conns", "content_encoding", "content_type",
        "drain_waiter", "error", "fd", "got_bytes", "head_only", "headers", "headers_done", "idle", "idle_since",
        "keep_alive", "loop", "parser", "read_deadline", "read_timer", "reading_paused", "reason", "status",
        "transport", "waiter", "write_paused",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: dict[Connection, None], conns: set[Connection]):
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
        self.headers: list[tuple[bytes, bytes]] = []  # (name as sent, value)
        self.content_type: str | None = None
        self.content_encoding: bytes | None = None
        self.headers_done = False
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

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-type":
            if self.content_type is None:
                self.content_type = value.decode("latin-1")
        elif lowered == b"content-encoding":
            self.content_encoding = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (100 Continue, 103 Early Hints): the real one follows
            self.headers = []
            self.content_type = self.content_encoding = None
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
        self.content_type = self.content_encoding = None
        self.headers_done = self.complete = self.keep_alive = self.got_bytes = False
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
