"""Small asyncio HTTP servers on 127.0.0.1 and a client over FastTransport, for the upstream tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Self

import orjson
import uvloop

from gateway.upstream.base import RequestBody, Target, Timeouts
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.transport import FastTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


BOUND = 5.0  # seconds: no wait of these tests may last longer


class Server:
    """A TCP server whose connections are served by `handler`; counts and tracks them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=BOUND)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancellation is the end of the test: the task ends either way
        finally:
            self.open -= 1
            writer.close()
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The request line, lower-cased headers and body (Content-Length or chunked) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    else:
        length = int(headers.get(b"content-length", b"0"))
        body = await reader.readexactly(length) if length else b""
    return lines[0], headers, body


def json_response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        len(body),
        extra,
        body,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def echo_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with {"line", "body"} as JSON, keep-alive."""
    while True:
        try:
            line, headers, body = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        payload = b'{"line":"%b","body":%b,"rid":"%b"}' % (line, body or b"null", headers.get(b"x-request-id", b""))
        writer.write(json_response(payload))
        await writer.drain()


class Client:
    """What the tests send through: a transport, its timeouts, and whole or streamed answers."""

    def __init__(self, transport: FastTransport, timeouts: Timeouts) -> None:
        self.transport = transport
        self.timeouts = timeouts

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.aclose()

    async def open(
        self, method: str, url: str, content: RequestBody = None, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """The response once its head arrived, body unread."""
        pairs = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        return await self.transport.send(method, Target.parse(url), pairs, content, self.timeouts)

    async def request(self, method: str, url: str, content: RequestBody = None, **kwargs: Any) -> UpstreamResponse:
        """The response, read whole."""
        response = await self.open(method, url, content, **kwargs)
        await response.aread()
        return response

    async def post(self, url: str, content: RequestBody = None, **kwargs: Any) -> UpstreamResponse:
        return await self.request("POST", url, content, **kwargs)

    async def get(self, url: str) -> UpstreamResponse:
        return await self.request("GET", url)

    async def head(self, url: str) -> UpstreamResponse:
        return await self.request("HEAD", url)

    @asynccontextmanager
    async def stream(self, method: str, url: str, content: RequestBody = None) -> AsyncIterator[UpstreamResponse]:
        response = await self.open(method, url, content)
        try:
            yield response
        finally:
            await response.aclose()


def client(transport: FastTransport | None = None, **timeouts: float) -> Client:
    return Client(transport or FastTransport(), Timeouts(**{"connect": 2.0, "read": 2.0, "write": 2.0, **timeouts}))


def loads(response: UpstreamResponse) -> Any:
    return orjson.loads(response.content)


async def wait_until(condition: Callable[[], bool], timeout: float = BOUND) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def answers(data: bytes) -> Handler:
    """A handler that answers one request with `data`, then waits for the client to close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(data)
        await writer.drain()
        await reader.read()

    return handler


def reading(response: UpstreamResponse) -> asyncio.Task[None]:
    """A task that reads `response` to its end."""

    async def consume() -> None:
        async for _ in response:
            pass

    return asyncio.ensure_future(consume())


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One answer, then the kept-alive connection is closed, as a server's idle timeout would."""
    await read_request(reader)
    writer.write(json_response(b'{"ok":true}'))
    await writer.drain()


def scenarios(namespace: dict[str, Any]) -> dict[str, Callable[[], Awaitable[None]]]:
    """A test module's async tests, by name: each runs again on uvloop (the gateway's loop)."""
    return {
        name: test
        for name, test in list(namespace.items())
        if name.startswith("test_") and inspect.iscoroutinefunction(test)
    }


def run_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(BOUND * 3):
            await scenario()

    uvloop.run(bounded())
