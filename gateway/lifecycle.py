"""
What runs when the processes start and stop, registered on the app by `install()`:

- the main process (`main_process_start`, before it spawns the workers, which inherit what it
  made): the shared-memory tables (rate limits, replica ejections) and the Prometheus
  multiprocess folder; removed again when it stops;
- each worker (`before_server_start`): its own socket on the port (`process/listener.py`), its
  CPU (`PIN_WORKERS`), and its `Services` (`services.py`: the upstream connection pool, the Redis
  client, the routes, the models cache, the guard, the proxy and the catalogue that the
  blueprints call); once it serves, the stop signals; when it stops, the open streams are ended
  within the grace period and the services are closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os

from sanic import Sanic

from gateway.admission.ratelimit import create_shared_table
from gateway.observability import metrics as metrics_module
from gateway.observability.access import access_log
from gateway.observability.metrics import metrics
from gateway.patches import prometheus as prometheus_patch
from gateway.process.listener import listen_alone
from gateway.process.server import StopSignals, count_server_processes, freeze_startup_heap, pin_worker_to_cpu
from gateway.process.supervisor import REPLACES_ENV
from gateway.services import Services
from gateway.settings import Settings
from gateway.shared import ejections as ejections_module
from gateway.shared import engine_load, prefix_index

__all__ = ["install"]

logger = logging.getLogger("gateway")


def install(app: Sanic) -> None:
    """Register the listeners on `app`, in the order each event runs them."""
    app.main_process_start(prepare_shared_state)
    app.main_process_stop(remove_shared_state)
    app.before_server_start(set_up_worker_process)
    app.before_server_start(start_services)  # after the socket and the CPU are the worker's
    app.after_server_start(worker_ready)
    app.before_server_stop(drain_streams)
    app.after_server_stop(stop_services)


def prepare_shared_state(app: Sanic) -> None:
    settings: Settings = app.ctx.settings
    if settings.prometheus_enable:
        metrics_module.prepare_multiprocess_dir()
    if settings.rate_limit_per_min:
        app.shared_ctx.rate_table = create_shared_table()
    app.shared_ctx.ejections = ejections_module.create_table(settings.routes)
    app.shared_ctx.engine_load = engine_load.create_table(settings.routes)
    if "prefix" in settings.routing_policies.values():
        app.shared_ctx.prefix_index = prefix_index.create_table(settings.routes)


def remove_shared_state(app: Sanic) -> None:
    metrics_module.remove_multiprocess_dir()


async def set_up_worker_process(app: Sanic) -> None:
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


async def start_services(app: Sanic) -> None:
    app.ctx.services = Services.build(
        app.ctx.settings,
        shared_ctx=app.shared_ctx,
        local_limiter=app.ctx.local_limiter,
        transport=app.ctx.upstream_transport,
    )
    loop = asyncio.get_running_loop()
    access_log.write_after_each_loop_step(loop)
    prometheus_patch.write_after_each_loop_step(loop)


async def worker_ready(app: Sanic) -> None:
    signals = StopSignals(
        asyncio.get_running_loop(), functools.partial(app.stop, terminate=False), lambda: app.state.is_running
    )
    if signals.take_over():
        app.ctx.services.stop_signals = signals
    freeze_startup_heap()


async def drain_streams(app: Sanic) -> None:
    services: Services = app.ctx.services
    if services.stop_signals is not None:
        services.stop_signals.shutting_down()
    # Sanic lets in-flight requests run for GRACEFUL_SHUTDOWN_TIMEOUT, then aborts their
    # connections. Streams still open just before that end with an in-band error instead.
    grace = services.settings.graceful_shutdown_seconds
    services.stream_deadline = services.proxy.end_streams_after(max(grace - 0.5, 0.0))


async def stop_services(app: Sanic) -> None:
    services: Services = app.ctx.services
    try:
        await services.aclose()
        access_log.write_after_each_loop_step(None)
        metrics_module.mark_worker_stopped()
    finally:
        if services.stop_signals is not None:
            services.stop_signals.release()
