"""
One pooled connection (gateway/upstream/connection.py) through FastTransport, against small asyncio
servers: how responses are parsed and framed, and which error each failure is. Every test runs on
the default loop, and again on uvloop (the gateway's loop) through `test_every_scenario_on_uvloop`.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time

import httpx
import pytest

from gateway.upstream.connection import READ_HIGH_WATER
from gateway.upstream.transport import FastTransport
from tests.unit.upstream.servers import (
    BOUND,
    SSE_HEAD,
    Server,
    answers,
    chunk,
    client,
    json_response,
    loads,
    read_request,
    reading,
    run_on_uvloop,
    scenarios,
    wait_until,
)


async def test_a_compressed_body_is_decoded() -> None:
    body = gzip.compress(b'{"packed":true}')

    async with Server(answers(json_response(body, b"content-encoding: gzip\r\n"))) as server, client() as http:
        assert loads(await http.post(f"{server.url}/p", content=b"{}")) == {"packed": True}


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


SCENARIOS = scenarios(globals())


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_on_uvloop(name: str) -> None:
    run_on_uvloop(SCENARIOS[name])
