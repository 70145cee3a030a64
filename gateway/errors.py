"""
Every error the gateway reports to a client, and the one place that renders them.

The hierarchy (status in brackets):

    GatewayError [500]
    ├── BadRequest [400]
    ├── Unauthorized [401]
    ├── ModelNotAllowed [403]
    ├── NotFound [404]
    │   └── UnknownRouteKey [404]
    ├── MethodNotAllowed [405]
    ├── RoutingConflict [409]
    ├── PayloadTooLarge [413]
    ├── RateLimited [429]
    ├── UpstreamError [502]
    │   ├── UpstreamUnavailable [502]   connection refused, reset, DNS
    │   └── UpstreamProtocolError [502] broken framing or a dropped stream
    └── UpstreamTimeout [504]

Each renders as `{"error": {"message": str, "type": str, "code": str}}`. Errors that vLLM
itself returns are not in this tree: they are relayed with vLLM's own status and body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from sanic import HTTPResponse, Request
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler

from .responses import Response

__all__ = [
    "BadRequest",
    "GatewayError",
    "GatewayErrorHandler",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RoutingConflict",
    "Unauthorized",
    "UnknownRouteKey",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_body",
]

logger = logging.getLogger("gateway.errors")


class GatewayError(Exception):
    """Base class: an error with an HTTP status, an error type and a stable code."""

    status: int = 500
    type: str = "internal_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def to_json(self) -> bytes:
        return error_body(self.message, self.type, self.code)


class BadRequest(GatewayError):
    """The request body or a header is malformed; the message names the field."""

    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(GatewayError):
    """No API key, or a wrong one."""

    status, type, code = 401, "authentication_error", "invalid_api_key"


class ModelNotAllowed(GatewayError):
    """The model is outside `ALLOWED_MODELS`."""

    status, type, code = 403, "permission_error", "model_not_allowed"


class NotFound(GatewayError):
    """No such path."""

    status, type, code = 404, "not_found_error", "not_found"


class UnknownRouteKey(NotFound):
    """The `modelKey` names no configured route."""

    code = "unknown_model_key"


class MethodNotAllowed(GatewayError):
    """The path exists, but not for this method."""

    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class RoutingConflict(GatewayError):
    """No route, or more than one, serves the requested model."""

    status, type, code = 409, "routing_error", "model_route_conflict"


class PayloadTooLarge(GatewayError):
    """The body is larger than `MAX_BODY_BYTES`."""

    status, type, code = 413, "invalid_request_error", "payload_too_large"


class RateLimited(GatewayError):
    """The client spent its budget; `Retry-After` says when to come back."""

    status, type, code = 429, "rate_limit_error", "rate_limited"


class UpstreamError(GatewayError):
    """The upstream could not give a usable answer."""

    status, type, code = 502, "upstream_error", "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """The upstream refused or dropped the connection."""

    code = "upstream_unavailable"


class UpstreamProtocolError(UpstreamError):
    """The upstream broke HTTP or SSE framing, or dropped a response half-way."""

    code = "upstream_protocol_error"


class UpstreamTimeout(GatewayError):
    """The upstream did not answer in time."""

    status, type, code = 504, "timeout_error", "upstream_timeout"


def error_body(message: str, type: str, code: str | int) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "code": code}})


# Sanic raises its own exceptions before our handlers run (unknown path, wrong method, body too
# large, unreadable request); they are rendered in the same envelope, with a code per status.
_SANIC_CODES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    413: ("invalid_request_error", "payload_too_large"),
    414: ("invalid_request_error", "uri_too_long"),
    416: ("invalid_request_error", "range_not_satisfiable"),
    503: ("unavailable_error", "service_unavailable"),
}


def _json_response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    return Response(body, status=status, headers=dict(headers or {}), content_type="application/json")


class GatewayErrorHandler(ErrorHandler):
    """Renders every exception as the JSON envelope: never HTML, never a traceback."""

    def default(self, request: Request, exception: BaseException) -> HTTPResponse:
        if isinstance(exception, asyncio.CancelledError):
            # The client hung up (Sanic's RequestCancelled): nobody will read this; no alarm.
            return _json_response(499, error_body("client closed the request", "client_closed", "client_closed"))
        if isinstance(exception, GatewayError):
            status, code, body = exception.status, exception.code, exception.to_json()
            headers: Mapping[str, Any] = exception.headers
        elif isinstance(exception, SanicException):
            status = int(getattr(exception, "status_code", 500) or 500)
            type_, code = _SANIC_CODES.get(status, ("internal_error", "internal_error"))
            message = _sanic_message(exception, status)
            if status >= 500:
                logger.error("server error: %s", message, exc_info=exception, extra=_request_id(request))
            body, headers = error_body(message, type_, code), getattr(exception, "headers", None) or {}
        else:
            logger.error(
                "unhandled error on %s %s",
                request.method,
                request.path,
                exc_info=(type(exception), exception, exception.__traceback__),
            )
            status, code, headers = 500, "internal_error", {}
            body = error_body("internal gateway error", "internal_error", code)
        request.ctx.error = code  # for the request's access log line
        return _json_response(status, body, headers)


def _request_id(request: Request) -> dict[str, str | None]:
    """The request id for an error's log line (every line of a request carries it)."""
    return {"request_id": getattr(request.ctx, "request_id", None)}


def _sanic_message(exception: SanicException, status: int) -> str:
    message = str(exception.message if hasattr(exception, "message") else exception) or ""
    if status == 404:
        return "no such endpoint"
    if status == 405:
        return message or "method not allowed on this endpoint"
    if status == 413:
        return "request body is larger than MAX_BODY_BYTES"
    return message or f"HTTP {status}"
