"""
FastTransport's pool (gateway/upstream/transport.py) against small asyncio servers on 127.0.0.1,
through the transport seam's `send`: reuse, expiry, limits, closing, fallback. Every test runs on
the default loop, and again on uvloop through `test_every_scenario_on_uvloop`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.upstream.httpx_transport import HttpxTransport
from gateway.upstream.transport import STALE_CHECK_AFTER, FastTransport
from tests.unit.upstream.servers import (
    BOUND,
    SSE_HEAD,
    Server,
    answer_once,
    answers,
    chunk,
    client,
    echo_json,
    json_response,
    loads,
    read_request,
    run_on_uvloop,
    scenarios,
    wait_until,
)


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


SCENARIOS = scenarios(globals())


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_on_uvloop(name: str) -> None:
    run_on_uvloop(SCENARIOS[name])
