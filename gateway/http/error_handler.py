"""
The one handler that renders every exception a request raises as the JSON envelope of
`gateway/errors.py`: the gateway's own errors, Sanic's (raised before the gateway's handlers run:
unknown path, wrong method, body too large, unreadable request) and any other, as a 500 whose
traceback goes to the log, never to the client. On `/v1` the envelope is OpenAI's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sanic import HTTPResponse, Request
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler

from gateway.errors import GatewayError, error_body, openai_error_body
from gateway.http.responses import Response

__all__ = ["SANIC_CODES", "GatewayErrorHandler", "is_openai_path"]

# The name it had when the handler lived in gateway/errors.py: log filters may select it.
logger = logging.getLogger("gateway.errors")


def is_openai_path(path: str) -> bool:
    """Whether `path` is on the OpenAI-compatible surface, whose errors read as OpenAI's."""
    return path.startswith("/v1/") or path == "/v1"


# Sanic raises its own exceptions before our handlers run (unknown path, wrong method, body too
# large, unreadable request); they are rendered in the same envelope: status -> (type, code, when).
SANIC_CODES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "the request could not be read as HTTP"),
    404: ("not_found_error", "not_found", "no such endpoint"),
    405: ("invalid_request_error", "method_not_allowed", "the path exists, but not for this method"),
    408: ("timeout_error", "request_timeout", "the request head or body came too slowly; the connection is closed"),
    413: ("invalid_request_error", "payload_too_large", "the body is over `MAX_BODY_BYTES`, or the head too large"),
    414: ("invalid_request_error", "uri_too_long", "the URL is too long"),
    416: ("invalid_request_error", "range_not_satisfiable", "a `Range` the /docs files cannot satisfy"),
    503: ("unavailable_error", "service_unavailable", "Sanic cannot take the request now"),
}


def _json_response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    return Response(body, status=status, headers=dict(headers or {}), content_type="application/json")


class GatewayErrorHandler(ErrorHandler):
    """Renders every exception as the JSON envelope: never HTML, never a traceback."""

    def default(self, request: Request, exception: BaseException) -> HTTPResponse:
        if isinstance(exception, asyncio.CancelledError):
            # The client hung up (Sanic's RequestCancelled): nobody will read this; no alarm.
            return _json_response(499, error_body("client closed the request", "client_closed", "client_closed"))
        openai = is_openai_path(request.path)
        if isinstance(exception, GatewayError):
            status, code, body = exception.render(openai)
            headers: Mapping[str, Any] = exception.headers
        elif isinstance(exception, SanicException):
            status = int(getattr(exception, "status_code", 500) or 500)
            type_, code, _ = SANIC_CODES.get(status, ("internal_error", "internal_error", ""))
            message = _sanic_message(request, exception, status)
            if status >= 500:
                logger.error("server error: %s", message, exc_info=exception, extra=_request_id(request))
            body = openai_error_body(message, type_, code) if openai else error_body(message, type_, code)
            headers = getattr(exception, "headers", None) or {}
        else:
            logger.error(
                "unhandled error on %s %s",
                request.method,
                request.path,
                exc_info=(type(exception), exception, exception.__traceback__),
            )
            status, code, headers = 500, "internal_error", {}
            message, type_ = "internal gateway error", "internal_error"
            body = openai_error_body(message, type_, code) if openai else error_body(message, type_, code)
        request.ctx.error = code  # for the request's access log line
        return _json_response(status, body, headers)


def _request_id(request: Request) -> dict[str, str | None]:
    """The request id for an error's log line (every line of a request carries it)."""
    return {"request_id": getattr(request.ctx, "request_id", None)}  # any request Sanic hands us


def _sanic_message(request: Request, exception: SanicException, status: int) -> str:
    message = str(exception.message if hasattr(exception, "message") else exception) or ""
    if status == 404:
        return "no such endpoint"
    if status == 405:
        return message or "method not allowed on this endpoint"
    if status == 413:
        if "header" in message:  # Sanic's own limit on the request head
            return f"request headers are larger than {request.app.config.REQUEST_MAX_HEADER_SIZE} bytes"
        limit = request.app.ctx.settings.max_body_bytes
        return f"request body is larger than MAX_BODY_BYTES ({limit} bytes)"
    return message or f"HTTP {status}"
