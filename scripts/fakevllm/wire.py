"""HTTP/1.1 on asyncio and httptools: one `Connection` per client, requests parsed as they come."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import http
import sys
import time
from typing import TYPE_CHECKING

import httptools

from fakevllm.common import JSON

if TYPE_CHECKING:
    from fakevllm.app import FakeVLLM


@functools.cache
def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. Its task answers the requests in order, so that sleeps block nobody else."""

    def __init__(self, app: FakeVLLM) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.pending: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a response is under way: losing the connection now is an abort
        self.dropped = self.closing = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.log_line = ""
        self.served_api = False  # counted in stats.connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.connections.add(self)
        self.app.stats.open_connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(status_line(400) + b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        stats = self.app.stats
        self.app.connections.discard(self)
        stats.open_connections -= 1
        if self.busy:
            self.busy = False
            stats.aborted, stats.last_abort_at = stats.aborted + 1, time.time()
        if self.task is not None:  # stop working at once, as vLLM aborts a request whose client left
            self.task.cancel()

    def pause_writing(self) -> None:
        self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self.drain_waiter = None

    async def drain(self) -> None:
        if self.drain_waiter is not None:  # the client reads slowly: wait, rather than buffer without bound
            await self.drain_waiter

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode("latin-1")
        self.pending.append(Request(method, path, self.headers, b"".join(self.body), self.parser.should_keep_alive()))
        self.url, self.headers, self.body = b"", {}, []
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.serve())

    async def serve(self) -> None:
        while self.pending and not self.transport.is_closing():
            request = self.pending.popleft()
            self.busy, self.dropped, self.closing = True, False, not request.keep_alive
            self.log_line = f'"{request.method} {request.path}"'
            await self.app.dispatch(self, request)
            self.busy = False
            if self.closing:
                self.transport.close()
        self.task = None

    def head(self, status: int, content_type: bytes | None, length: int | None, extra: bytes = b"") -> bytes:
        """A response head with uvicorn's headers, in its order. No length means a chunked body."""
        parts = [status_line(status), b"date: ", self.app.date(), b"\r\nserver: uvicorn\r\n", extra]
        if length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        if content_type is not None:
            parts.append(b"content-type: %b\r\n" % content_type)
        parts.append(b"vary: Origin\r\n" if length is not None else b"vary: Origin\r\ntransfer-encoding: chunked\r\n")
        parts.append(b"connection: close\r\n\r\n" if self.closing else b"\r\n")
        if not self.app.quiet:
            print(self.log_line, status, file=sys.stderr)
        return b"".join(parts)

    def send(self, status: int, body: bytes, extra: bytes = b"", content_type: bytes = JSON) -> None:
        self.transport.write(self.head(status, content_type, len(body), extra) + body)

    def send_event(self, data: bytes) -> None:
        """One SSE event in its own HTTP chunk, as vLLM sends them."""
        event = b"data: %b\n\n" % data
        self.transport.write(b"%x\r\n%b\r\n" % (len(event), event))

    def drop(self) -> None:
        """Reset the connection on purpose: counted as dropped, not as a client abort."""
        self.busy, self.dropped = False, True
        self.app.stats.dropped += 1
        self.transport.abort()
