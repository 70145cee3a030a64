"""gateway/http/requests.py: the request state every request starts with, and the body of a non-streaming
route arriving whole, as with Sanic's own read."""

from __future__ import annotations

import itertools
import socket

import pytest
from sanic import Sanic, text

from gateway.http.requests import Request, RequestState

_names = itertools.count()


@pytest.fixture
def app() -> Sanic:
    app = Sanic(f"requests_{next(_names)}", request_class=Request)
    app.config.REQUEST_MAX_SIZE = 1000

    @app.post("/echo")
    async def echo(request: Request) -> object:
        assert isinstance(request, Request)
        return text(f"{len(request.body)}:{request.body[:20].decode()}")

    return app


def test_every_request_starts_with_the_whole_state_at_its_defaults(app: Sanic) -> None:
    seen: list[RequestState] = []

    @app.get("/state")
    async def state(request: Request) -> object:
        seen.append(request.ctx)
        return text("ok")

    app.test_client.get("/state")
    app.test_client.get("/state")
    first, second = seen
    assert isinstance(first, RequestState) and first is not second
    assert (first.request_id, first.route_key, first.rate, first.error) == (None, None, None, None)
    assert (first.streaming, first.recorded) == (False, False)
    fresh = RequestState()
    for field in RequestState.__slots__:  # every field readable before anyone wrote it
        getattr(fresh, field)


def test_a_body_with_a_length_arrives_whole(app: Sanic) -> None:
    _, response = app.test_client.post("/echo", content=b"x" * 900)
    assert response.status == 200
    assert response.text == "900:" + "x" * 20


def test_a_chunked_body_arrives_whole(app: Sanic) -> None:
    async def chunks() -> object:  # no length known: sent chunked
        for part in (b"hello ", b"chunked ", b"world"):
            yield part

    _, response = app.test_client.post("/echo", content=chunks())
    assert response.status == 200
    assert response.text == "19:hello chunked world"


def test_no_body_is_an_empty_one(app: Sanic) -> None:
    _, response = app.test_client.post("/echo")
    assert response.text == "0:"


def test_a_body_over_the_limit_is_refused(app: Sanic) -> None:
    _, response = app.test_client.post("/echo", content=b"x" * 1001)
    assert response.status == 413


def test_expect_100_continue_gets_its_interim_answer() -> None:
    app = Sanic(f"requests_{next(_names)}", request_class=Request)

    @app.post("/echo")
    async def echo(request: Request) -> object:
        return text(request.body.decode())

    @app.after_server_start
    async def talk(app: Sanic) -> None:
        port = app.state.port
        loop = app.loop

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                interim = sock.recv(100)
                sock.sendall(b"hello")
                return interim + sock.recv(1000)

        app.ctx.reply = await loop.run_in_executor(None, exchange)
        app.stop()

    app.run(host="127.0.0.1", port=0, single_process=True, access_log=False, motd=False)
    assert app.ctx.reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert app.ctx.reply.endswith(b"hello")
