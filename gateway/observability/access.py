"""
What is recorded when a request ends: its request metrics and its access log line.

Non-streaming requests end when their response is sent (the app's response middleware);
streams end when their last byte is sent (the proxy, since Sanic's response middleware runs
before a stream's first byte); requests whose client hung up end there too, as status 499.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from sanic import Request

from gateway.http.requests import RequestState
from gateway.observability.logs import AccessLog
from gateway.observability.metrics import metrics

__all__ = ["CLIENT_CLOSED", "access_log", "record_request"]

CLIENT_CLOSED = 499  # nginx's "client closed request"
access_log = AccessLog()


def record_request(request: Request[Any, Any], status: int) -> None:
    """Record a finished request, once: later calls for the same request do nothing."""
    ctx = cast(RequestState, request.ctx)  # create_app() makes every request a gateway Request
    if ctx.recorded:
        return
    ctx.recorded = True
    started = ctx.started
    duration = time.perf_counter() - started if started is not None else 0.0
    route = request.route
    endpoint = "/" + route.path if route is not None else "unmatched"
    metrics.requests_for(endpoint, request.method, str(status)).inc()
    metrics.request_duration_for(endpoint).observe(duration)
    if access_log.logger.isEnabledFor(logging.INFO):
        access_log.write(
            {
                "request_id": ctx.request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
                "route": ctx.route_key,
                "model": ctx.model,
                "client_ip": ctx.client_ip or request.ip,
                "upstream_status": ctx.upstream_status,
                # The code of the gateway's error, a JSON one or a stream's in-band one.
                "error": ctx.error,
            }
        )
