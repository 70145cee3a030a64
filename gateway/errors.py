"""
Every error the gateway reports to a client, and the JSON envelope it reads as. The one handler
that renders them (and Sanic's own errors) into responses is `gateway/http/error_handler.py`.

The hierarchy (status in brackets):

    GatewayError [500]
    ├── BadRequest [400]
    ├── Unauthorized [401]
    ├── ModelNotAllowed [403]
    ├── NotFound [404]
    │   └── UnknownRouteKey [404]
    ├── MethodNotAllowed [405]
    ├── RoutingConflict [409]
    │   ├── ModelRequired [409; /v1: 400]
    │   ├── AmbiguousModel [409; /v1: 400]
    │   └── ModelNotServed [409; /v1: 404 model_not_found]
    ├── PayloadTooLarge [413]
    ├── RateLimited [429]
    ├── UpstreamError [502]
    │   ├── UpstreamUnavailable [502]   connection refused, reset, DNS
    │   │   └── NoUpstreamConfigured [502, not to be retried]
    │   └── UpstreamProtocolError [502] broken framing or a dropped stream
    └── UpstreamTimeout [504]

Each renders as `{"error": {"message": str, "type": str, "code": str}}`. Errors that vLLM
itself returns are not in this tree: they are relayed with vLLM's own status and body.

On `/v1` the clients are OpenAI's SDKs, so errors read as OpenAI's do: the envelope also holds
`param` (the request field at fault, or null), and an error may take another status there. The
SDKs retry 408, 409, 429 and every 5xx twice by default, so a routing mistake that the seed
answers with 409 (a typo in `model`) would cost three requests, three rate-limit tokens and
about a second; on `/v1` it is what OpenAI answers instead (404 `model_not_found`, or 400). A
5xx that no retry can mend (no upstream configured) carries `x-should-retry: false`, which the
SDKs obey.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = [
    "AmbiguousModel",
    "BadRequest",
    "GatewayError",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "ModelNotServed",
    "ModelRequired",
    "NoUpstreamConfigured",
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
    "openai_error_body",
]


class GatewayError(Exception):
    """Base class: an error with an HTTP status, an error type and a stable code."""

    status: int = 500
    type: str = "internal_error"
    code: str = "internal_error"
    # The request field at fault (OpenAI's `param`), where there is one.
    param: str | None = None
    # How the error reads on `/v1` when that differs: (status, type, code).
    openai: tuple[int, str, str] | None = None
    # False: retrying cannot help (`x-should-retry: false` for the SDKs, which retry every 5xx).
    retryable: bool = True
    # The other codes this error is raised with (`code=`), for the documented list of errors.
    other_codes: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        if not self.retryable:
            self.headers["x-should-retry"] = "false"

    def to_json(self) -> bytes:
        return error_body(self.message, self.type, self.code)

    def render(self, openai: bool) -> tuple[int, str, bytes]:
        """The status, code and body: as OpenAI's API would answer when `openai`, else as `/api`."""
        if not openai:
            return self.status, self.code, self.to_json()
        status, type_, code = self.openai or (self.status, self.type, self.code)
        return status, code, openai_error_body(self.message, type_, code, self.param)


class BadRequest(GatewayError):
    """The request body or a header is malformed; the message names the field."""

    status, type, code = 400, "invalid_request_error", "invalid_request"
    other_codes = ("invalid_json", "invalid_field", "missing_field")


class Unauthorized(GatewayError):
    """No API key, or a wrong one."""

    status, type, code = 401, "authentication_error", "invalid_api_key"
    other_codes = ("missing_api_key",)


class ModelNotAllowed(GatewayError):
    """The model is outside `ALLOWED_MODELS` (or none is named while it is set)."""

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
    param = "model"


class ModelRequired(RoutingConflict):
    """Neither a model nor a route is named, and no default decides."""

    code = "model_required"
    openai = (400, "invalid_request_error", "model_required")


class AmbiguousModel(RoutingConflict):
    """Several routes serve the model: `modelKey` must choose."""

    code = "ambiguous_model"
    openai = (400, "invalid_request_error", "ambiguous_model")


class ModelNotServed(RoutingConflict):
    """No route serves the model, or not the route `modelKey` names."""

    code = "model_not_served"
    openai = (404, "invalid_request_error", "model_not_found")


class PayloadTooLarge(GatewayError):
    """The body is larger than `MAX_BODY_BYTES`."""

    status, type, code = 413, "invalid_request_error", "payload_too_large"


class RateLimited(GatewayError):
    """The client spent its budget; `Retry-After` says when to come back."""

    status, type, code = 429, "rate_limit_error", "rate_limited"


class UpstreamError(GatewayError):
    """The upstream could not give a usable answer (or, mid-stream, the gateway is shutting down)."""

    status, type, code = 502, "upstream_error", "upstream_error"
    other_codes = ("shutting_down",)


class UpstreamUnavailable(UpstreamError):
    """The upstream refused or dropped the connection."""

    code = "upstream_unavailable"


class NoUpstreamConfigured(UpstreamUnavailable):
    """No route is configured at all: an operator's mistake, which no retry mends."""

    code = "no_upstream_configured"
    retryable = False


class UpstreamProtocolError(UpstreamError):
    """The upstream broke HTTP or SSE framing, or dropped a response half-way."""

    code = "upstream_protocol_error"


class UpstreamTimeout(GatewayError):
    """The upstream did not answer in time."""

    status, type, code = 504, "timeout_error", "upstream_timeout"


def error_body(message: str, type: str, code: str | int) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "code": code}})


def openai_error_body(message: str, type: str, code: str | int, param: str | None = None) -> bytes:
    """OpenAI's envelope: `param` is always there, null when no field is at fault."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
