"""
What runs around every request's handler: the request id, admission, and the response headers.

- On the way in: the request's start time, its id (the client's `X-Request-ID` when it is safe
  to echo, else a new one), then the worker's guard (rate limit, then API key), which may refuse
  the request before any handler runs.
- On the way out, for every response (errors and refusals included): the CORS headers, the
  request id, the rate-limit headers, and the access record of a complete response (a stream is
  recorded when it ends).
"""

from __future__ import annotations

import random
import re
import time

from sanic import HTTPResponse, Sanic

from gateway.http.cors import ALLOW_HEADERS, CorsPolicy
from gateway.http.requests import Request
from gateway.observability.access import record_request
from gateway.settings import Settings

__all__ = ["RequestMiddleware", "new_request_id"]

# Incoming request ids are echoed and logged, so only a safe, bounded alphabet is accepted.
_valid_request_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def new_request_id() -> str:
    """128 random bits in hex, like a UUID4 but without a system call per request.

    `random` is seeded from the OS in every (spawned) worker, so workers never share a sequence.
    """
    return f"{random.getrandbits(128):032x}"


class RequestMiddleware:
    """The request and response middleware of one app (`install`).

    The CORS policy depends on the settings alone, so it is built once here, with the app; the
    guard is the worker's (`app.ctx.services`, built when the worker starts), looked up once
    per request.
    """

    __slots__ = ("cors_policy",)

    def __init__(self, settings: Settings) -> None:
        self.cors_policy = CorsPolicy(settings.allow_origins, ALLOW_HEADERS + settings.cors_allow_headers)

    def install(self, app: Sanic) -> None:
        app.on_request(self.begin, priority=1000)
        app.on_response(self.end, priority=1000)

    async def begin(self, request: Request) -> None:
        ctx = request.ctx
        ctx.started = time.perf_counter()
        incoming = request.headers.get("x-request-id")
        ctx.request_id = incoming if incoming and _valid_request_id(incoming) else new_request_id()
        await request.app.ctx.services.guard.admit(request)

    async def end(self, request: Request, response: HTTPResponse) -> None:
        ctx = request.ctx
        request_id = ctx.request_id
        if request_id is None:  # the request failed before the request middleware ran
            request_id = ctx.request_id = new_request_id()
        self.cors_policy.apply(request, response)
        headers = response.headers
        headers["x-request-id"] = request_id
        rate = ctx.rate
        if rate is not None:
            headers.update(rate.headers())
        if not ctx.streaming:  # a stream is recorded when it ends
            record_request(request, response.status)
