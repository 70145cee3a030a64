"""
`create_app()`: the Sanic application with its blueprints, middleware and listeners.

It is the factory every process runs (`python -m gateway` hands it to Sanic's worker manager;
`sanic gateway.app:create_app --factory -w N` does the same), so everything is built once per
process, never per request. Where things live:

- main process (`main_process_start`): the shared-memory tables (rate limits, replica
  ejections) and the Prometheus multiprocess folder, all of which must exist before the workers
  are spawned;
- each worker (`before_server_start`): its own socket on the port (`listener.py`), its CPU
  (`PIN_WORKERS`), and its `Services` (`services.py`: the upstream connection pool, the Redis
  client, the routes, the models cache, the guard, the proxy and the catalogue that the
  blueprints call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import re
import sys
import time

import orjson
from sanic import HTTPResponse, Sanic
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from gateway import __version__
from gateway.admission.ratelimit import LocalLimiter, create_shared_table
from gateway.api import blueprints, openapi_builder
from gateway.api.blueprints.docs import UI_CONFIG as DOCS_UI_CONFIG
from gateway.http.error_handler import GatewayErrorHandler
from gateway.http.requests import Request
from gateway.http.sanic_config import server_config
from gateway.observability import metrics as metrics_module
from gateway.observability.access import access_log, record_request
from gateway.observability.logs import log_config
from gateway.observability.metrics import metrics
from gateway.process.listener import listen_alone
from gateway.process.server import (
    StopSignals,
    count_server_processes,
    freeze_startup_heap,
    pin_worker_to_cpu,
    shield_worker_manager_from_signals,
)
from gateway.process.supervisor import REPLACES_ENV, supervise_workers
from gateway.services import Services
from gateway.settings import Settings
from gateway.settings_loader import SettingsError, load_settings
from gateway.shared import ejections as ejections_module

__all__ = ["APP_NAME", "create_app", "load_or_exit"]

logger = logging.getLogger("gateway")

APP_NAME = "gateway"
# Incoming request ids are echoed and logged, so only a safe, bounded alphabet is accepted.
_valid_request_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def new_request_id() -> str:
    """128 random bits in hex, like a UUID4 but without a system call per request.

    `random` is seeded from the OS in every (spawned) worker, so workers never share a sequence.
    """
    return f"{random.getrandbits(128):032x}"


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
    shield_worker_manager_from_signals()
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
    app.on_request(_begin_request, priority=1000)
    app.on_response(_end_request, priority=1000)
    app.main_process_start(_prepare_shared_state)
    app.main_process_stop(_remove_shared_state)
    app.before_server_start(_set_up_worker_process)
    app.before_server_start(_start_services)
    app.after_server_start(_worker_ready)
    app.before_server_stop(_drain_streams)
    app.after_server_stop(_stop_services)
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    app.config.update(
        REQUEST_MAX_SIZE=settings.max_body_bytes,
        # Sanic's own, counted from the last byte; gateway/http/sanic_protocol.py adds a deadline for the
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


async def _begin_request(request: Request) -> None:
    ctx = request.ctx
    ctx.started = time.perf_counter()
    incoming = request.headers.get("x-request-id")
    ctx.request_id = incoming if incoming and _valid_request_id(incoming) else new_request_id()
    await request.app.ctx.services.guard.admit(request)


async def _end_request(request: Request, response: HTTPResponse) -> None:
    ctx = request.ctx
    request_id = ctx.request_id
    if request_id is None:  # the request failed before the request middleware ran
        request_id = ctx.request_id = new_request_id()
    request.app.ctx.services.cors_policy.apply(request, response)
    headers = response.headers
    headers["x-request-id"] = request_id
    rate = ctx.rate
    if rate is not None:
        headers.update(rate.headers())
    if not ctx.streaming:  # a stream is recorded when it ends
        record_request(request, response.status)


def _prepare_shared_state(app: Sanic) -> None:
    settings: Settings = app.ctx.settings
    if settings.prometheus_enable:
        metrics_module.prepare_multiprocess_dir()
    if settings.rate_limit_per_min:
        app.shared_ctx.rate_table = create_shared_table()
    app.shared_ctx.ejections = ejections_module.create_table(settings.routes)


def _remove_shared_state(app: Sanic) -> None:
    metrics_module.remove_multiprocess_dir()


async def _set_up_worker_process(app: Sanic) -> None:
    for server in app.state.server_info:  # Sanic listens on `sock` after this listener
        listen_alone(server.settings.get("sock"))
    settings: Settings = app.ctx.settings
    # `sanic ... -w N` may run another number of workers than WORKERS says.
    multiplexer = getattr(app, "multiplexer", None)  # Sanic's link to its worker manager
    workers = count_server_processes(multiplexer.workers) if multiplexer is not None else settings.workers
    pin_worker_to_cpu(settings.pin_workers, workers)
    replaced = os.environ.get(REPLACES_ENV)
    if replaced is not None:  # started by the supervisor in place of a worker that died
        metrics.worker_restarts.inc()
        logger.info("worker %d replaces worker %s", os.getpid(), replaced or "?")


async def _start_services(app: Sanic) -> None:
    app.ctx.services = Services.build(
        app.ctx.settings,
        shared_ctx=app.shared_ctx,
        local_limiter=app.ctx.local_limiter,
        transport=app.ctx.upstream_transport,
    )
    loop = asyncio.get_running_loop()
    access_log.write_after_each_loop_step(loop)
    metrics_module.write_after_each_loop_step(loop)


async def _worker_ready(app: Sanic) -> None:
    signals = StopSignals(
        asyncio.get_running_loop(), functools.partial(app.stop, terminate=False), lambda: app.state.is_running
    )
    if signals.take_over():
        app.ctx.services.stop_signals = signals
    freeze_startup_heap()


async def _drain_streams(app: Sanic) -> None:
    services: Services = app.ctx.services
    if services.stop_signals is not None:
        services.stop_signals.shutting_down()
    # Sanic lets in-flight requests run for GRACEFUL_SHUTDOWN_TIMEOUT, then aborts their
    # connections. Streams still open just before that end with an in-band error instead.
    grace = services.settings.graceful_shutdown_seconds
    services.stream_deadline = services.proxy.end_streams_after(max(grace - 0.5, 0.0))


async def _stop_services(app: Sanic) -> None:
    services: Services = app.ctx.services
    try:
        await services.aclose()
        access_log.write_after_each_loop_step(None)
        metrics_module.mark_worker_stopped()
    finally:
        if services.stop_signals is not None:
            services.stop_signals.release()
