"""
The cheapest SSE relay on Sanic: what Sanic's own request path costs, with nothing of the
gateway's on top. `bench/burst_pairs.py --sanic-relay` measures it beside the gateway.

    .venv/bin/python bench/sanic_relay.py --port 5061 --upstream-port 8000 [--workers 2]
        [--client fast|httpx|aiohttp|httpx-aiohttp]

It serves as the gateway does (its listening socket per worker, workers pinned to CPUs, Sanic's
config read without exceptions, the start-up heap frozen) and has one route, POST /v1/chat/completions, which sends the body on to the upstream as it came
and relays the answer's bytes as they come: no middleware, no routing, no logging, no metrics,
no heartbeats, no error handling. GET /health answers "ok". Loopback only.

`--client` chooses the upstream client, so that `bench/peers.py --peers relay-fast,relay-aiohttp,...`
can compare them with nothing else changed:
  fast           gateway/upstream/transport.py's FastTransport (the gateway's own; the default)
  httpx          httpx's stock transport (httpcore + h11), pool without a connection cap
  aiohttp        an aiohttp.ClientSession (TCPConnector without a connection cap), used directly
  httpx-aiohttp  httpx's API over aiohttp (httpx-aiohttp's AiohttpTransport, no connection cap)
Every client closes the upstream connection when the relay stops before the body's end, which is
what makes vLLM abort a generation. aiohttp and httpx-aiohttp are not the project's requirements:
bench/peers.py installs them apart (see its docstring) and puts them on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sanic import HTTPResponse, Request, Sanic
from sanic.response import text
from sanic.worker.loader import AppLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.patches.sanic_config import ServerConfig
from gateway.process.listener import bind_port, listen_alone
from gateway.process.server import freeze_startup_heap, pin_worker_to_cpu
from gateway.upstream.base import Target, Timeouts
from gateway.upstream.transport import FastTransport

HOST = "127.0.0.1"
_HEADERS = [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")]


CLIENTS = ("fast", "httpx", "aiohttp", "httpx-aiohttp")
# What a client gives the relay: (status, content type, the body's chunks, close).
Answer = tuple[int, str | None, AsyncIterator[bytes], Callable[[], Awaitable[Any]]]


def httpx_sender(transport: httpx.AsyncBaseTransport, url: str) -> Callable[[bytes], Awaitable[Answer]]:
    target = httpx.URL(url)

    async def send(body: bytes) -> Answer:
        answer = await transport.handle_async_request(httpx.Request("POST", target, headers=_HEADERS, content=body))
        stream = answer.stream
        return answer.status_code, answer.headers.get("content-type"), stream.__aiter__(), answer.aclose  # type: ignore[union-attr]

    return send


def fast_sender(url: str) -> Callable[[bytes], Awaitable[Answer]]:
    transport, target, timeouts = FastTransport(keepalive_expiry=4.0), Target.parse(url), Timeouts()

    async def send(body: bytes) -> Answer:
        answer = await transport.send("POST", target, _HEADERS, body, timeouts)
        return answer.status, answer.content_type, answer.__aiter__(), answer.aclose

    return send


def make_sender(client: str, url: str) -> Callable[[bytes], Awaitable[Answer]]:
    """The chosen client's way of POSTing `body` to `url`; built in the worker's loop."""
    if client == "fast":
        return fast_sender(url)
    if client == "httpx":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024, keepalive_expiry=4.0)
        return httpx_sender(httpx.AsyncHTTPTransport(limits=limits, trust_env=False), url)
    import aiohttp  # type: ignore[import-not-found]

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0), auto_decompress=False, trust_env=False
    )
    if client == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]

        # Its own session: httpx-aiohttp 0.2.0 turns `Limits(max_connections=None)` into aiohttp's
        # default of 100 connections, which an idle-stream load exhausts.
        return httpx_sender(AiohttpTransport(client=session), url)
    headers = {name.decode(): value.decode() for name, value in _HEADERS}

    async def send(body: bytes) -> Answer:
        answer = await session.post(url, data=body, headers=headers, allow_redirects=False)

        async def close() -> None:
            # A body read to its end: the connection goes back to the pool; else it is dropped.
            if answer.content.at_eof():
                answer.release()
            else:
                answer.close()

        return answer.status, answer.headers.get("content-type"), answer.content.iter_any(), close

    return send


def create_app() -> Sanic:
    app = Sanic("sanic_relay", config=ServerConfig())
    app.config.update(ACCESS_LOG=False, MOTD=False)
    upstream = f"http://{HOST}:{os.environ['SANIC_RELAY_UPSTREAM_PORT']}/v1/chat/completions"
    workers = int(os.environ["SANIC_RELAY_WORKERS"])
    client = os.environ["SANIC_RELAY_CLIENT"]

    @app.before_server_start
    async def start(app: Sanic) -> None:
        for server in app.state.server_info:
            listen_alone(server.settings.get("sock"))
        pin_worker_to_cpu("auto", workers)
        app.ctx.send = make_sender(client, upstream)

    @app.after_server_start
    async def ready(app: Sanic) -> None:
        freeze_startup_heap()

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return text("ok")

    @app.post("/v1/chat/completions")
    async def relay(request: Request) -> None:
        status, content_type, chunks, close = await app.ctx.send(request.body)
        try:
            response = await request.respond(status=status, content_type=content_type)
            async for chunk in chunks:
                await response.send(chunk)
            await response.eof()
        finally:
            await close()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client", choices=CLIENTS, default="fast")
    args = parser.parse_args()
    os.environ.update(
        SANIC_RELAY_UPSTREAM_PORT=str(args.upstream_port), SANIC_RELAY_WORKERS=str(args.workers),
        SANIC_RELAY_CLIENT=args.client,
    )  # fmt: skip
    sock = bind_port(HOST, args.port, backlog=4096)
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(sock=sock, workers=args.workers, backlog=4096, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
