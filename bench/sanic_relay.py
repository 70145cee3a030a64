"""
The cheapest SSE relay on Sanic: what Sanic's own request path costs, with nothing of the
gateway's on top. `bench/burst_pairs.py --sanic-relay` measures it beside the gateway.

    .venv/bin/python bench/sanic_relay.py --port 5061 --upstream-port 8000 [--workers 2]

It serves as the gateway does (its listening socket per worker, workers pinned to CPUs, Sanic's
config read without exceptions, the start-up heap frozen, gateway/upstream/transport.py upstream) and
has one route, POST /v1/chat/completions, which sends the body on to the upstream as it came
and relays the answer's bytes as they come: no middleware, no routing, no logging, no metrics,
no heartbeats, no error handling. GET /health answers "ok". Loopback only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx
from sanic import HTTPResponse, Request, Sanic
from sanic.response import text
from sanic.worker.loader import AppLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.http.sanic_config import ServerConfig
from gateway.process.listener import bind_port, listen_alone
from gateway.process.server import freeze_startup_heap, pin_worker_to_cpu
from gateway.upstream.transport import FastTransport

HOST = "127.0.0.1"
_HEADERS = [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")]


def create_app() -> Sanic:
    app = Sanic("sanic_relay", config=ServerConfig())
    app.config.update(ACCESS_LOG=False, MOTD=False)
    upstream = httpx.URL(f"http://{HOST}:{os.environ['SANIC_RELAY_UPSTREAM_PORT']}/v1/chat/completions")
    workers = int(os.environ["SANIC_RELAY_WORKERS"])

    @app.before_server_start
    async def start(app: Sanic) -> None:
        for server in app.state.server_info:
            listen_alone(server.settings.get("sock"))
        pin_worker_to_cpu("auto", workers)
        app.ctx.transport = FastTransport()

    @app.after_server_start
    async def ready(app: Sanic) -> None:
        freeze_startup_heap()

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        return text("ok")

    @app.post("/v1/chat/completions")
    async def relay(request: Request) -> None:
        answer = await app.ctx.transport.handle_async_request(
            httpx.Request("POST", upstream, headers=_HEADERS, content=request.body)
        )
        response = await request.respond(status=answer.status_code, content_type=answer.headers.get("content-type"))
        try:
            async for chunk in answer.stream:  # type: ignore[union-attr]
                await response.send(chunk)
            await response.eof()
        finally:
            await answer.aclose()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.update(SANIC_RELAY_UPSTREAM_PORT=str(args.upstream_port), SANIC_RELAY_WORKERS=str(args.workers))
    sock = bind_port(HOST, args.port, backlog=4096)
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(sock=sock, workers=args.workers, backlog=4096, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
