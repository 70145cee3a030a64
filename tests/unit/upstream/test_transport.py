"""
FastTransport against small asyncio servers on 127.0.0.1, through the transport seam's `send`.
Every test runs on the default asyncio loop, and again on uvloop (the gateway's loop) through
`test_every_scenario_on_uvloop`.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Self

import httpx
import orjson
import pytest
import uvloop

from gateway.upstream.base import RequestBody, Target, Timeouts
from gateway.upstream.connection import READ_HIGH_WATER
from gateway.upstream.httpx_transport import HttpxTransport
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.transport import STALE_CHECK_AFTER, FastTransport

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


async def test_a_json_post_round_trip() -> None:
    async with Server(echo_json) as server, client() as http:
        response = await http.post(
            f"{server.url}/v1/chat/completions?x=1",
            content=b'{"model":"m"}',
            headers={"content-type": "application/json", "x-request-id": "r1"},
        )
        assert response.status == 200
        assert response.reason == b"OK"
        assert response.content_type == response.header("Content-Type") == "application/json"
        assert loads(response) == {
            "line": "POST /v1/chat/completions?x=1 HTTP/1.1",
            "body": {"model": "m"},
            "rid": "r1",
        }
        got = await http.get(f"{server.url}/v1/models")
        assert loads(got)["line"] == "GET /v1/models HTTP/1.1"


async def test_a_body_that_came_with_its_head_is_read_and_its_connection_free_at_once() -> None:
    async with Server(echo_json) as server, client() as http:
        first = await http.open("POST", f"{server.url}/a", b"1")
        second = await http.open("POST", f"{server.url}/b", b"2")
        assert (await first.aread(), await second.aread()) == (
            b'{"line":"POST /a HTTP/1.1","body":1,"rid":""}',
            b'{"line":"POST /b HTTP/1.1","body":2,"rid":""}',
        )
        assert [chunk async for chunk in first] == []  # a body is read once
        await first.aclose()
        await second.aclose()
    assert server.connections == 1


async def test_a_compressed_body_is_decoded() -> None:
    body = gzip.compress(b'{"packed":true}')

    async with Server(answers(json_response(body, b"content-encoding: gzip\r\n"))) as server, client() as http:
        assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"packed": True}


async def test_the_request_head_carries_host_the_given_headers_and_the_body_length() -> None:
    seen: list[dict[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers, _ = await read_request(reader)
        seen.append(headers)
        writer.write(json_response(b"{}"))
        await writer.drain()
        await reader.read()

    async with Server(handler) as server, client() as http:
        await http.post(f"{server.url}/x", content=b"abc", headers={"x-a": "1"})
    assert seen[0][b"host"] == f"127.0.0.1:{server.port}".encode()
    assert seen[0][b"content-length"] == b"3"
    assert seen[0][b"x-a"] == b"1"


async def test_a_chunked_sse_body_arrives_as_it_is_sent() -> None:
    first_seen = asyncio.Event()
    sent_last_at: list[float] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: one\n\n"))
        await writer.drain()
        async with asyncio.timeout(BOUND):
            await first_seen.wait()
        writer.write(chunk(b"data: two\n\n"))
        await asyncio.sleep(0.01)
        sent_last_at.append(time.monotonic())
        writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(handler) as server, client() as http:
        async with asyncio.timeout(BOUND):
            response = await http.open("POST", f"{server.url}/v1/chat/completions", b"{}")
            received: list[bytes] = []
            async for data in response:
                if not received:
                    first_at = time.monotonic()
                    first_seen.set()
                received.append(data)
            await response.aclose()
    assert b"".join(received) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    assert received[0] == b"data: one\n\n"
    assert first_at < sent_last_at[0]


async def test_sequential_requests_reuse_one_connection() -> None:
    async with Server(echo_json) as server, client() as http:
        for i in range(10):
            response = await http.post(f"{server.url}/p", content=b"%d" % i)
            assert loads(response)["body"] == i
        # a streamed response read to its end returns its connection too
        async with http.stream("POST", f"{server.url}/s", content=b"1") as response:
            assert b"".join([data async for data in response])
        await http.post(f"{server.url}/p", content=b"1")
    assert server.connections == 1


async def test_a_stream_whose_end_came_with_its_last_event_is_released_without_reading_on() -> None:
    release_now = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # 1: the end comes in the same write as [DONE]
        writer.write(SSE_HEAD + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await read_request(reader)  # 2: the end comes later
        writer.write(SSE_HEAD + chunk(b"data: [DONE]\n\n"))
        await writer.drain()
        async with asyncio.timeout(BOUND):
            await release_now.wait()
        writer.write(b"0\r\n\r\n")
        await echo_json(reader, writer)

    # As the gateway sends its streams: to the transport itself, whose body stream it reads.
    transport = FastTransport()
    async with Server(handler) as server, client(transport) as http:
        async with asyncio.timeout(BOUND):
            first = await http.open("POST", f"{server.url}/s", b"{}")
            assert await anext(aiter(first)) == b"data: [DONE]\n\n"
            assert first.release_if_read() and first.is_closed
            second = await http.open("POST", f"{server.url}/s", b"{}")
            assert await anext(aiter(second)) == b"data: [DONE]\n\n"
            assert not second.release_if_read()  # its end is still to come: the connection is busy
            release_now.set()
            assert [data async for data in second] == []
            assert loads(await http.post(f"{server.url}/p", content=b"3"))["body"] == 3
    assert server.connections == 1


async def test_a_response_read_with_its_head_holds_nothing_to_release() -> None:
    async with Server(echo_json) as server, client() as http:
        response = await http.open("POST", f"{server.url}/p", b"1")
        assert response.release_if_read() and response.is_closed
        assert loads(response) == {"line": "POST /p HTTP/1.1", "body": 1, "rid": ""}


async def test_the_most_recently_used_idle_connection_is_reused_first() -> None:
    async with Server(echo_json) as server:
        transport = FastTransport()
        async with client(transport) as http:
            await asyncio.gather(*(http.post(f"{server.url}/p", content=b"1") for _ in range(2)))
            assert server.connections == 2
            (idle,) = transport._idle.values()
            newest = list(idle)[-1]
            await http.post(f"{server.url}/p", content=b"1")
            assert list(idle)[-1] is newest and len(idle) == 2


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


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with Server(answer_once) as server:
        transport = FastTransport()
        async with client(transport) as http:
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"ok": True}
            await wait_until(lambda: server.open == 0)
            await wait_until(lambda: not transport._conns)
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"ok": True}
    assert server.connections == 2


async def test_a_connection_closed_just_before_its_reuse_is_not_reused() -> None:
    # The server's EOF is in the socket, but the event loop has not run since: the poll sees it.
    async with Server(answer_once) as server:
        transport = FastTransport()
        async with client(transport) as http:
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"ok": True}
            time.sleep(0.05)  # noqa: ASYNC251 - blocks the loop on purpose: the EOF arrives unseen
            for idle in transport._idle.values():
                for conn in idle:
                    conn.idle_since -= STALE_CHECK_AFTER
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"ok": True}
    assert server.connections == 2


async def test_connection_close_responses_are_not_kept() -> None:
    async with Server(answers(json_response(b"{}", b"connection: close\r\n"))) as server:
        transport = FastTransport()
        async with client(transport) as http:
            for _ in range(3):
                assert (await http.post(f"{server.url}/p", content=b"{}")).status == 200
            assert not any(transport._idle.values())
    assert server.connections == 3


async def test_idle_connections_expire() -> None:
    async with Server(echo_json) as server, client(FastTransport(keepalive_expiry=0.05)) as http:
        await http.post(f"{server.url}/p", content=b"1")
        await asyncio.sleep(0.1)
        await http.post(f"{server.url}/p", content=b"1")
    assert server.connections == 2


async def test_at_most_max_keepalive_idle_connections_are_kept_per_origin() -> None:
    async with Server(echo_json) as server:
        transport = FastTransport(max_keepalive=2)
        async with client(transport) as http:
            await asyncio.gather(*(http.post(f"{server.url}/p", content=b"1") for _ in range(5)))
            assert server.connections == 5
            assert [len(idle) for idle in transport._idle.values()] == [2]
            await wait_until(lambda: server.open == 2)


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            async with asyncio.timeout(BOUND):
                await http.post(f"http://127.0.0.1:{port}/p", content=b"{}")


async def test_a_connection_the_server_never_accepts_is_a_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: once its queue is full, SYNs are dropped
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            await asyncio.sleep(0.05)
            async with client(connect=0.2, read=30.0) as http:
                started = time.monotonic()
                with pytest.raises(httpx.ConnectTimeout):
                    async with asyncio.timeout(BOUND):
                        await http.post(f"http://127.0.0.1:{port}/p", content=b"{}")
                assert time.monotonic() - started < 3.0
        finally:
            for filler in fillers:
                filler.close()


async def test_a_server_that_never_reads_is_a_write_timeout() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await asyncio.sleep(BOUND)  # cancelled when the test ends

    transport = FastTransport()
    async with Server(deaf) as server, client(transport, write=0.2) as http:
        with pytest.raises(httpx.WriteTimeout):  # not the BOUND's TimeoutError: the write deadline
            async with asyncio.timeout(BOUND):
                await http.post(f"{server.url}/p", content=b"x" * (64 * 1024 * 1024))
        await wait_until(lambda: not transport._conns)  # and the connection was closed


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with Server(silent) as server, client(read=0.2) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async with asyncio.timeout(BOUND):
                await http.post(f"{server.url}/p", content=b"{}")
        assert 0.15 < time.monotonic() - started < 2.0
        await wait_until(lambda: server.open == 0)  # and the connection was closed


async def test_a_stall_between_two_chunks_is_a_read_timeout() -> None:
    async with Server(answers(SSE_HEAD + chunk(b"data: one\n\n"))) as server, client(read=0.2) as http:
        async with asyncio.timeout(BOUND):
            async with http.stream("POST", f"{server.url}/p", content=b"{}") as response:
                with pytest.raises(httpx.ReadTimeout):
                    async for _ in response:
                        pass
            await wait_until(lambda: server.open == 0)


async def test_a_stream_longer_than_the_read_timeout_lives_while_chunks_keep_coming() -> None:
    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for number in range(8):  # 0.4 s in all, a chunk every 0.05 s, against a 0.2 s read timeout
            await asyncio.sleep(0.05)
            writer.write(chunk(b"data: %d\n\n" % number))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with (
        Server(steady) as server,
        client(read=0.2) as http,
        asyncio.timeout(BOUND),
        http.stream("POST", f"{server.url}/p", content=b"{}") as response,
    ):
        body = b"".join([part async for part in response])
    assert body == b"".join(b"data: %d\n\n" % number for number in range(8))


async def test_a_chunked_body_cut_short_is_a_remote_protocol_error() -> None:
    async def cuts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: one\n\n"))
        await writer.drain()

    async with Server(cuts) as server, client() as http:
        async with asyncio.timeout(BOUND):
            async with http.stream("POST", f"{server.url}/p", content=b"{}") as response:
                received: list[bytes] = []
                with pytest.raises(httpx.RemoteProtocolError):
                    async for data in response:
                        received.append(data)
                assert received == [b"data: one\n\n"]
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(f"{server.url}/p", content=b"{}")


async def test_a_content_length_body_cut_short_is_a_remote_protocol_error() -> None:
    async def cuts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()

    async with Server(cuts) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with asyncio.timeout(BOUND):
                await http.post(f"{server.url}/p", content=b"{}")


async def test_a_close_without_any_response_is_a_remote_protocol_error() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Server(hangs_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response."):
            async with asyncio.timeout(BOUND):
                await http.post(f"{server.url}/p", content=b"{}")


async def test_a_reset_is_a_read_error() -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: one\n\n"))
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with Server(resets) as server, client() as http:
        async with asyncio.timeout(BOUND):
            async with http.stream("POST", f"{server.url}/p", content=b"{}") as response:
                with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                    async for _ in response:
                        pass


async def test_malformed_http_is_a_remote_protocol_error() -> None:
    async with Server(answers(b"HTTP/1.1 abc nonsense\r\n\x00\x01\r\n\r\n")) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with asyncio.timeout(BOUND):
                await http.post(f"{server.url}/p", content=b"{}")
        await wait_until(lambda: server.open == 0)


async def test_a_body_delimited_by_the_close_of_the_connection() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")
        await writer.drain()

    async with Server(old_style) as server, client() as http:
        async with asyncio.timeout(BOUND):
            response = await http.post(f"{server.url}/p", content=b"{}")
            assert response.content == b"all of it"
            assert (await http.post(f"{server.url}/p", content=b"{}")).content == b"all of it"
    assert server.connections == 2


async def test_response_headers_keep_their_case_order_and_repeats() -> None:
    async with (
        Server(answers(json_response(b"{}", b"X-Dup: 1\r\nx-dup: 2\r\nX-Other: caf\xc3\xa9\r\n"))) as server,
        client() as http,
    ):
        response = await http.post(f"{server.url}/p", content=b"{}")
    assert response.headers[-3:] == [(b"X-Dup", b"1"), (b"x-dup", b"2"), (b"X-Other", b"caf\xc3\xa9")]
    assert response.header("X-DUP") == "1"
    assert response.header("Content-Length") == "2"
    assert response.header("x-missing") is None


async def test_a_head_response_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request(reader)
            assert line.startswith(b"HEAD ")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            await writer.drain()

    async with Server(handler) as server, client() as http:
        async with asyncio.timeout(BOUND):
            for _ in range(2):
                response = await http.head(f"{server.url}/p")
                assert response.status == 200 and response.content == b""


async def test_bytes_after_the_response_drop_the_connection() -> None:
    async with Server(answers(json_response(b'{"n":1}') + json_response(b'{"n":2}'))) as server, client() as http:
        async with asyncio.timeout(BOUND):
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"n": 1}
            assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"n": 1}
    assert server.connections == 2


async def test_an_interim_response_is_skipped() -> None:
    async with (
        Server(answers(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + json_response(b'{"a":1}'))) as server,
        client() as http,
    ):
        response = await http.post(f"{server.url}/p", content=b"{}")
        assert response.status == 200
        assert "link" not in response.headers
        assert loads(response) == {"a": 1}


async def test_an_early_close_of_a_stream_closes_its_connection_at_once() -> None:
    closed_at: list[float] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)

        async def produce() -> None:
            while True:
                writer.write(chunk(b"data: tok\n\n"))
                await asyncio.sleep(0.01)

        producer = asyncio.ensure_future(produce())
        try:
            await reader.read()  # EOF: the client closed
            closed_at.append(time.monotonic())
        finally:
            producer.cancel()

    async with Server(endless) as server:
        transport = FastTransport()
        async with client(transport) as http:
            async with asyncio.timeout(BOUND):
                response = await http.open("POST", f"{server.url}/p", b"{}")
                async for data in response:
                    assert data.startswith(b"data: tok")
                    break
                await response.aclose()
                left_at = time.monotonic()
                await wait_until(lambda: bool(closed_at), timeout=1.0)
            assert closed_at[0] - left_at < 0.5
            assert not any(transport._idle.values())


async def test_cancelling_a_request_waiting_for_headers_closes_its_connection() -> None:
    got_request = asyncio.Event()
    closed_at: list[float] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        got_request.set()
        await reader.read()
        closed_at.append(time.monotonic())

    async with Server(slow) as server:
        transport = FastTransport()
        async with client(transport) as http:
            task = asyncio.ensure_future(http.post(f"{server.url}/p", content=b"{}"))
            async with asyncio.timeout(BOUND):
                await got_request.wait()
            task.cancel()
            cancelled_at = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(BOUND):
                    await task
            await wait_until(lambda: bool(closed_at), timeout=1.0)
            assert closed_at[0] - cancelled_at < 0.5
            assert not transport._conns


async def test_cancelling_a_body_read_closes_its_connection() -> None:
    closed_at: list[float] = []

    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"data: one\n\n"))
        await reader.read()
        closed_at.append(time.monotonic())

    async with Server(slow_body) as server, client() as http:
        response = await http.open("POST", f"{server.url}/p", b"{}")
        task = reading(response)
        await asyncio.sleep(0.05)
        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(BOUND):
                await task
        await wait_until(lambda: bool(closed_at), timeout=1.0)
        assert closed_at[0] - cancelled_at < 0.5
        await response.aclose()


async def test_closing_the_response_from_another_task_wakes_its_reader() -> None:
    async with Server(answers(SSE_HEAD + chunk(b"data: one\n\n"))) as server, client() as http:
        response = await http.open("POST", f"{server.url}/p", b"{}")
        task = reading(response)
        await asyncio.sleep(0.05)
        await response.aclose()
        with pytest.raises(httpx.ReadError):
            async with asyncio.timeout(BOUND):
                await task
        await wait_until(lambda: server.open == 0)


async def test_many_concurrent_streams_each_hold_a_connection() -> None:
    count = 300
    all_in = asyncio.Event()
    arrived = 0

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        line, _, _ = await read_request(reader)
        arrived += 1
        if arrived == count:
            all_in.set()
        writer.write(SSE_HEAD + chunk(b"data: " + line.split()[1] + b"\n\n"))
        async with asyncio.timeout(BOUND):
            await all_in.wait()
        writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(stream) as server, client() as http:

        async def one(i: int) -> bytes:
            async with http.stream("POST", f"{server.url}/{i}", content=b"{}") as response:
                return b"".join([data async for data in response])

        async with asyncio.timeout(BOUND * 2):
            bodies = await asyncio.gather(*(one(i) for i in range(count)))
    assert bodies == [b"data: /%d\n\ndata: [DONE]\n\n" % i for i in range(count)]
    assert server.max_open == count


async def test_a_slow_reader_pauses_the_socket() -> None:
    size = 4 * 1024 * 1024
    piece = b"x" * 65536

    async def floods(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
        await reader.read()

    async with Server(floods) as server:
        transport = FastTransport()
        async with (
            client(transport) as http,
            asyncio.timeout(BOUND),
            http.stream("POST", f"{server.url}/p", content=b"{}") as response,
        ):
            total, paused = 0, False
            async for data in response:
                total += len(data)
                await asyncio.sleep(0.02)  # the server could send megabytes meanwhile
                (conn,) = transport._conns
                paused = paused or conn.reading_paused
                assert conn.buffered <= READ_HIGH_WATER + 256 * 1024  # one socket read at most beyond it
            assert total == size
            assert paused


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b'{"a":', b"", b"1}"):
            yield part
            await asyncio.sleep(0)

    async with Server(echo_json) as server, client() as http:
        response = await http.post(f"{server.url}/p", content=parts())
        assert loads(response)["body"] == {"a": 1}
        big = b'"' + b"y" * 200_000 + b'"'
        assert loads(await http.post(f"{server.url}/p", content=big))["body"] == big[1:-1].decode()
    assert server.connections == 1


async def test_other_schemes_go_to_the_fallback_transport() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"ok": True})

    async with client(FastTransport(fallback=HttpxTransport(httpx.MockTransport(handler)))) as http:
        assert loads(await http.post("https://example.invalid/p", content=b"{}")) == {"ok": True}
    assert seen == [httpx.URL("https://example.invalid/p")]


async def test_aclose_closes_every_connection() -> None:
    async with Server(echo_json) as server:
        transport = FastTransport()
        async with client(transport) as http:
            await asyncio.gather(*(http.post(f"{server.url}/p", content=b"1") for _ in range(3)))
            assert server.open == 3
        await wait_until(lambda: server.open == 0)


SCENARIOS = {
    name: test
    for name, test in list(globals().items())
    if name.startswith("test_") and inspect.iscoroutinefunction(test)
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_on_uvloop(name: str) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(BOUND * 3):
            await SCENARIOS[name]()

    uvloop.run(bounded())
