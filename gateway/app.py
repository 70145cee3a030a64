"""
`create_app()`: the Sanic application with its blueprints, middleware and listeners.

It is the factory every worker process runs (`python -m gateway` passes it to Sanic's worker
manager; `sanic gateway.app:create_app --factory -w N` does the same), so everything here is
built once per worker, never per request.
"""

from __future__ import annotations

import re
import sys
import uuid

import orjson
from sanic import HTTPResponse, Request, Sanic

from . import blueprints
from .errors import GatewayErrorHandler
from .models_cache import ModelsCache
from .proxy import Proxy
from .redis_store import RedisStore, connect_redis
from .routing import Router
from .server import shield_worker_manager_from_signals
from .settings import Settings, SettingsError, load_settings
from .upstream import Upstream

__all__ = ["create_app", "APP_NAME"]

APP_NAME = "gateway"
# Incoming request ids are echoed and logged, so only a safe, bounded alphabet is accepted.
_valid_request_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def load_or_exit() -> Settings:
    """The settings, or one line on stderr naming the bad variable and exit code 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"gateway: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> Sanic:
    settings = settings or load_or_exit()
    # Here rather than in __main__, so that `sanic gateway.app:create_app --factory` has it too.
    shield_worker_manager_from_signals()
    app = Sanic(APP_NAME, dumps=orjson.dumps, loads=orjson.loads, error_handler=GatewayErrorHandler())
    app.ctx.settings = settings
    _configure(app, settings)
    for blueprint in blueprints.all_blueprints:
        app.blueprint(blueprint)
    app.on_request(_assign_request_id, priority=1000)
    app.on_response(_echo_request_id, priority=1000)
    app.before_server_start(_start_services)
    app.before_server_stop(_drain_streams)
    app.after_server_stop(_stop_services)
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        GRACEFUL_SHUTDOWN_TIMEOUT=settings.graceful_shutdown_seconds,
        # Sanic's response timeout also bounds the wait for a non-streaming upstream answer and
        # the silence between two writes of a stream; the upstream timeouts decide instead.
        RESPONSE_TIMEOUT=max(
            settings.total_timeout_seconds or 0,
            settings.connect_timeout_seconds + settings.write_timeout_seconds + settings.read_timeout_seconds,
        )
        + 5,
        FALLBACK_ERROR_FORMAT="json",
        ACCESS_LOG=False,
        NOISY_EXCEPTIONS=False,
        MOTD=False,
    )


async def _assign_request_id(request: Request) -> None:
    incoming = request.headers.get("x-request-id")
    request.ctx.request_id = incoming if incoming and _valid_request_id(incoming) else uuid.uuid4().hex
    request.ctx.route_key = None
    request.ctx.model = None
    request.ctx.upstream_status = None


async def _echo_request_id(request: Request, response: HTTPResponse) -> None:
    request_id = getattr(request.ctx, "request_id", None)
    if request_id is None:  # the request failed before the request middleware ran
        request_id = request.ctx.request_id = uuid.uuid4().hex
    response.headers["x-request-id"] = request_id


async def _start_services(app: Sanic) -> None:
    settings: Settings = app.ctx.settings
    upstream = Upstream(settings)
    store = RedisStore(connect_redis(settings.redis_url), settings.redis_prefix) if settings.use_redis else None

    async def list_route(route_key: str):  # noqa: ANN202 - the cache's Fetch signature
        for url in settings.routes[route_key]:
            listing = await upstream.list_models(url)
            if listing is not None:
                return listing
        return None

    models = ModelsCache(list_route, settings.models_cache_ttl_seconds, store)
    app.ctx.upstream = upstream
    app.ctx.redis = store
    app.ctx.proxy = Proxy(settings, Router(settings, models), upstream)


async def _drain_streams(app: Sanic) -> None:
    # Sanic lets in-flight requests run for GRACEFUL_SHUTDOWN_TIMEOUT, then aborts their
    # connections. Streams still open just before that end with an in-band error instead.
    grace = app.ctx.settings.graceful_shutdown_seconds
    app.ctx.stream_deadline = app.ctx.proxy.end_streams_after(max(grace - 0.5, 0.0))


async def _stop_services(app: Sanic) -> None:
    # after_server_stop: in-flight handlers have finished or been cancelled by now.
    deadline = getattr(app.ctx, "stream_deadline", None)
    if deadline is not None:
        deadline.cancel()
    await app.ctx.upstream.aclose()
    if app.ctx.redis is not None:
        await app.ctx.redis.aclose()
