"""
The documented error answers: the gateway's envelopes (`/api`'s, and OpenAI's on `/v1` with
`param`), vLLM's own error bodies where they are relayed, and the lists of error responses that
the blueprints attach to their operations. The error types and codes named here are read off
`gateway/errors.py` (through `gateway.error_catalogue`), never retyped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sanic_ext.extensions.openapi.definitions import Response

from gateway.api.openapi.schema import JSON, component, optional, ref, status
from gateway.error_catalogue import error_classes, error_rows

__all__ = [
    "API_LISTING_ERRORS",
    "API_ROUTED_ERRORS",
    "METRICS_ERRORS",
    "OPENAI_LISTING_ERRORS",
    "OPENAI_ROUTED_ERRORS",
]

_TYPES = ", ".join(dict.fromkeys(f"`{error.type}`" for error in error_classes()))
_CODES = ", ".join(dict.fromkeys(f"`{code}`" for row in error_rows() for code in row.codes))
_TYPE = f"The class of error: {_TYPES}."
_CODE = f"A stable code for programs: {_CODES} (docs/errors.md says when each is given)."
_MESSAGE = "For humans; a 400 names the offending field."
_EXACT = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong."""

    model_config = _EXACT
    message: str = Field(description=_MESSAGE)
    type: str = Field(description=_TYPE, examples=["invalid_request_error"])
    code: str = Field(description=_CODE, examples=["missing_field"])


@component
class ErrorResponse(BaseModel):
    """An error the gateway itself reports on `/api` (and `/metrics`): `{"error": {"message", "type", "code"}}`."""

    model_config = _EXACT
    error: ErrorDetail = Field(description="The error.")


class OpenAIErrorDetail(BaseModel):
    """What went wrong, as OpenAI's API words it."""

    model_config = _EXACT
    message: str = Field(description=_MESSAGE)
    type: str = Field(description=_TYPE, examples=["invalid_request_error"])
    param: str | None = Field(description="The request field at fault (e.g. `model`), or null.", examples=["model"])
    code: str = Field(
        description=f"{_CODE.removesuffix('.')}; on `/v1` a model that no route serves is `model_not_found`.",
        examples=["model_not_found"],
    )


@component
class OpenAIErrorResponse(BaseModel):
    """An error the gateway itself reports on `/v1`, in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`."""

    model_config = _EXACT
    error: OpenAIErrorDetail = Field(description="The error.")


class UpstreamErrorDetail(BaseModel):
    """vLLM's description of an error."""

    model_config = ConfigDict(extra="allow")
    message: str = optional(description="For humans.")
    type: str = optional(description="vLLM's error class, e.g. `BadRequestError`, `NotFoundError`.")
    param: str | None = Field(None, description="The request field at fault, or null.")
    # An integer: so the gateway's own envelopes (a string code) are told apart from vLLM's.
    code: int = optional(description="The HTTP status (vLLM's `ErrorInfo.code`).", examples=[400])


@component
class UpstreamErrorBody(BaseModel):
    """An error body of vLLM, relayed unchanged: `{"error": {"message", "type", "param", "code"}}` in
    recent vLLM, `{"detail": ...}` for a path it does not serve."""

    model_config = ConfigDict(extra="allow")
    error: UpstreamErrorDetail = optional(description="The error, as vLLM describes it.")
    detail: Any = optional(description="FastAPI's message, e.g. `Not Found`.")


def _error(
    code: int, description: str, envelope: type[BaseModel] = ErrorResponse, *, relayed: bool = False
) -> Response:
    """An error response in `envelope`; `relayed`: vLLM's own error bodies come with this status too."""
    body: dict[str, Any] = ref(envelope)
    if relayed:
        body = {"anyOf": [body, ref(UpstreamErrorBody)]}
        description += " vLLM's own errors with this status are relayed with their body unchanged."
    return Response({JSON: body}, status=status(code), description=description)


_UNAUTHORIZED = (
    "No API key, or a wrong one (only when the gateway has `API_KEY` set; codes `missing_api_key`, "
    "`invalid_api_key`). Send `X-API-Key: <key>` or `Authorization: Bearer <key>`."
)
_FORBIDDEN = "The model is not in the gateway's `ALLOWED_MODELS` (code `model_not_allowed`)."
_TIMEOUT_408 = (
    "The request body stalled for `REQUEST_BODY_TIMEOUT_SECONDS`, or its head took longer than "
    "`REQUEST_HEAD_TIMEOUT_SECONDS` (code `request_timeout`); the connection is closed."
)
_TOO_LARGE = "The body is larger than `MAX_BODY_BYTES` (code `payload_too_large`)."
_RATE_LIMITED = (
    "Over `RATE_LIMIT_PER_MIN` requests per minute from this client IP (code `rate_limited`). The `Retry-After` "
    "header gives the seconds to wait; `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` "
    "come with every rate-limited endpoint's responses."
)
_BAD_GATEWAY = (
    "The upstream is unreachable or gave a broken answer (codes `upstream_unavailable`, "
    "`upstream_protocol_error`, `no_upstream_configured`; the last one with `x-should-retry: false`)."
)
_GATEWAY_TIMEOUT = "The upstream did not answer in time (code `upstream_timeout`)."
_RELAYED = Response(
    {JSON: ref(UpstreamErrorBody)},
    status="default",
    description="Any other error status of vLLM, relayed with its status and body unchanged.",
)


def _admission_and_upstream(envelope: type[BaseModel]) -> tuple[Response, ...]:
    """What every routed endpoint may answer besides its own 400 to 409: the same on `/api` and `/v1`."""
    return (
        _error(408, _TIMEOUT_408, envelope),
        _error(413, _TOO_LARGE, envelope),
        _error(429, _RATE_LIMITED, envelope),
        _error(502, _BAD_GATEWAY, envelope),
        _error(504, _GATEWAY_TIMEOUT, envelope),
        _RELAYED,
    )


#: `/api` endpoints that route a request to an upstream: every error the gateway can give, and vLLM's.
API_ROUTED_ERRORS = (
    _error(
        400,
        "Malformed JSON, a body that is not a JSON object, a missing field or a field of the wrong type; the "
        "message names the field (codes `invalid_json`, `missing_field`, `invalid_field`).",
        relayed=True,
    ),
    _error(401, _UNAUTHORIZED),
    _error(403, _FORBIDDEN),
    _error(404, "`modelKey` (or `X-Model-Key`) names no configured route (code `unknown_model_key`).", relayed=True),
    _error(
        409,
        "The route cannot be chosen: no route serves the model (`model_not_served`), several do "
        "(`ambiguous_model`: pick one with `modelKey` or `X-Model-Key`), or neither a model nor a "
        "`DEFAULT_MODEL_KEY` is given (`model_required`).",
    ),
    *_admission_and_upstream(ErrorResponse),
)
#: `/v1` endpoints that route to an upstream: as on `/api`, in OpenAI's envelope, and with OpenAI's
#: statuses where the SDKs would otherwise retry (no 409).
OPENAI_ROUTED_ERRORS = (
    _error(
        400,
        "Malformed JSON, a body that is not a JSON object, or `model` or `stream` of the wrong type (codes "
        "`invalid_json`, `invalid_field`); no model and no `DEFAULT_MODEL_KEY` (`model_required`); a model "
        "that several routes serve (`ambiguous_model`: pick one with `X-Model-Key`).",
        OpenAIErrorResponse,
        relayed=True,
    ),
    _error(401, _UNAUTHORIZED, OpenAIErrorResponse),
    _error(403, _FORBIDDEN, OpenAIErrorResponse),
    _error(
        404,
        "No route serves the model (code `model_not_found`, param `model`), or `X-Model-Key` names no "
        "configured route (`unknown_model_key`).",
        OpenAIErrorResponse,
        relayed=True,
    ),
    *_admission_and_upstream(OpenAIErrorResponse),
)
#: The model lists and route status: a route that is down is left out, so only admission can fail.
API_LISTING_ERRORS = (_error(401, _UNAUTHORIZED), _error(429, _RATE_LIMITED))
OPENAI_LISTING_ERRORS = (
    _error(401, _UNAUTHORIZED, OpenAIErrorResponse),
    _error(429, _RATE_LIMITED, OpenAIErrorResponse),
)
#: `/metrics` is not rate limited, and needs no key with `METRICS_PUBLIC=true`.
METRICS_ERRORS = (
    _error(
        401, "No API key, or a wrong one: `/metrics` needs one when `API_KEY` is set, unless `METRICS_PUBLIC=true`."
    ),
)
