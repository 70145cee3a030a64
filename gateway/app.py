"""
`create_app()`: the Sanic application with its blueprints, middleware and listeners.

It is the factory every process runs (`python -m gateway` hands it to Sanic's worker manager;
`sanic gateway.app:create_app --factory -w N` does the same), so everything is built once per
process, never per request. What the app is made of is here; what runs around each request is
`middleware.py`, and what runs when the main process and each worker start and stop (the
shared-memory tables, each worker's `Services`) is `lifecycle.py`.
"""

from __future__ import annotations

import sys

import orjson
from sanic import Sanic
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from gateway import __version__, lifecycle
from gateway.admission.ratelimit import LocalLimiter
from gateway.api import blueprints
from gateway.api.blueprints.docs import UI_CONFIG as DOCS_UI_CONFIG
from gateway.api.openapi import builder as openapi_builder
from gateway.http.error_handler import GatewayErrorHandler
from gateway.http.requests import Request
from gateway.middleware import RequestMiddleware
from gateway.observability.logs import log_config
from gateway.patches.sanic_config import server_config
from gateway.patches.sanic_manager import defer_stop_signals
from gateway.process.supervisor import supervise_workers
from gateway.settings import Settings
from gateway.settings_loader import SettingsError, load_settings

__all__ = ["APP_NAME", "create_app", "load_or_exit"]

APP_NAME = "gateway"


def load_or_exit() -> Settings:
    """The settings, or one line on stderr naming the bad variable and exit code 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"gateway: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> Sanic:
    """The app, configured by `settings` (default: the environment and `.env`).

    The `sanic` command line calls a factory with its parsed arguments when it takes one; those
    are not settings, and are ignored like any other non-`Settings` argument.
    """
    if not isinstance(settings, Settings):
        settings = load_or_exit()
    # Here rather than in __main__, so that `sanic gateway.app:create_app --factory` has them too;
    # in this order, so that replacing a dead worker is shielded from stop signals as well.
    supervise_workers()
    defer_stop_signals()
    app = Sanic(
        APP_NAME,
        dumps=orjson.dumps,
        loads=orjson.loads,
        error_handler=GatewayErrorHandler(),
        log_config=log_config(settings.log_level),
        request_class=Request,  # type: ignore[arg-type]  # Sanic types it for SimpleNamespace contexts only
        config=server_config(),
    )
    # Known before any worker starts; `services` (gateway/services.py) is built in each worker.
    app.ctx.settings = settings
    # Tests may put an `httpx.MockTransport` here before the server starts; None: the real one.
    app.ctx.upstream_transport = None
    # A per-process limiter for single-process runs (tests), where no main process prepares
    # the shared table; built here so it outlives sanic-testing's per-request server restarts.
    app.ctx.local_limiter = LocalLimiter(settings.rate_limit_per_min) if settings.rate_limit_per_min else None
    _configure(app, settings)
    for blueprint in blueprints.all_blueprints:
        app.blueprint(blueprint)
    if settings.prometheus_enable:
        app.blueprint(blueprints.metrics)
    RequestMiddleware(settings).install(app)
    lifecycle.install(app)
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        # Sanic's own, counted from the last byte; gateway/patches/sanic_protocol.py adds a deadline for the
        # whole head and the body's idle limit.
        REQUEST_TIMEOUT=settings.request_head_timeout_seconds,
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
        AUTO_EXTEND=False,
        # CORS headers come from gateway/http/cors.py (sanic-ext's cost a tenth of a request's CPU);
        # sanic-ext still answers preflights with its automatic OPTIONS routes.
        CORS=False,
        # The docs page: Swagger UI from the gateway's own files, never from a CDN.
        **DOCS_UI_CONFIG,
        API_TITLE="vLLM gateway",
        API_DESCRIPTION="One stable, OpenAI-compatible API in front of several vLLM servers.",
        API_VERSION=__version__,
    )
    # Explicitly, not through AUTO_EXTEND: that one silently does nothing when sanic-ext cannot
    # be imported (sanic-ext 25.12 without pydantic), taking CORS and the docs away unnoticed.
    # Only the two extensions used: dependency injection alone would add a signal per request.
    Extend(app, extensions=[HTTPExtension, OpenAPIExtension], built_in_extensions=False)
    openapi_builder.install(app)  # /docs/openapi.json, built once per worker
