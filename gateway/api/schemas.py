"""
The OpenAPI description of the HTTP surface (served at `/docs/openapi.json`, UI at `/docs`).

Documentation only: requests are parsed and checked in `gateway.api.payloads`, and nothing here runs
per request. The blueprints attach these pieces to their handlers with `@openapi.definition`:

- request bodies (`API_CHAT_BODY`, ...) and success responses (`CHAT_COMPLETION`, ...),
  each built on a dataclass below that becomes a component schema;
- the error responses as shared lists: `/api`'s in the gateway's envelope (`ErrorResponse`),
  `/v1`'s in OpenAI's (`OpenAIErrorResponse`, with `param`), and where vLLM's own error bodies
  are relayed, those too (`UpstreamErrorBody`);
- the response headers (`response_headers`), which `gateway.api.openapi_builder` attaches to every
  documented response, since sanic-ext's response objects cannot carry headers;
- the `X-Request-ID` and `X-Model-Key` header parameters;
- the two API-key security schemes (`X-API-Key`, `Authorization: Bearer`), required by every
  operation unless it says otherwise (only `/health` does).

The document is OpenAPI 3.0.3 (what sanic-ext emits): a field that may be null says
`nullable: true`. An event stream's `schema` describes one event, `{event, data, id, retry}`, as
OpenAPI 3.2 models `text/event-stream` (and as schemathesis reads the `schema` of a 3.0 stream).

Why dataclasses are turned into schemas here rather than by `openapi.component`: sanic-ext
25.12 converts a dataclass without a `required` list and without the class's docstring, and adds a
`title` made from each property's name. `_object_schema` builds the same `Object` from the dataclass fields,
with `required` (the fields without a default), the docstring as description, and `$ref`s for
nested dataclasses. Per-field schema keywords (description, enum, example) come from the field's
`metadata["openapi"]`, the convention sanic-ext itself reads; a field whose type says too little
gives its whole schema instead (`_field(schema=...)`).

The component schemas, the security schemes and the tags are registered on sanic-ext's
specification builder when this module is imported. That builder is a process-wide singleton
(the object `app.ext.openapi` returns), so this works without touching the app factory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from sanic_ext.extensions.openapi.builders import OperationStore, SpecificationBuilder
from sanic_ext.extensions.openapi.definitions import Reference, RequestBody, Response
from sanic_ext.extensions.openapi.types import Array, Long, Object, Schema, String

__all__ = [
    "API_CHAT_BODY",
    "API_EMBEDDINGS_BODY",
    "API_LISTING_ERRORS",
    "API_MODEL_LIST",
    "API_ROUTED_ERRORS",
    "CHAT_COMPLETION",
    "CHAT_COMPLETION_OR_STREAM",
    "CHAT_STREAM",
    "COMPLETION_OR_STREAM",
    "EMBEDDINGS",
    "HEALTH",
    "METRICS_ERRORS",
    "METRICS_TEXT",
    "MODEL_KEY",
    "OPENAI_CHAT_BODY",
    "OPENAI_COMPLETION_BODY",
    "OPENAI_EMBEDDINGS_BODY",
    "OPENAI_LISTING_ERRORS",
    "OPENAI_MODEL_LIST",
    "OPENAI_ROUTED_ERRORS",
    "PUBLIC",
    "REQUEST_ID",
    "ROUTED_HEADERS",
    "ROUTE_STATUS",
    "SECURITY_SCHEMES",
    "ApiChatRequest",
    "ApiEmbeddingsRequest",
    "ApiModel",
    "ApiModelList",
    "ChatCompletion",
    "ChatMessage",
    "Completion",
    "EmbeddingList",
    "ErrorDetail",
    "ErrorResponse",
    "Health",
    "ModelSource",
    "OpenAIChatRequest",
    "OpenAICompletionRequest",
    "OpenAIEmbeddingsRequest",
    "OpenAIErrorDetail",
    "OpenAIErrorResponse",
    "OpenAIModel",
    "OpenAIModelList",
    "ReplicaStatus",
    "RouteStatus",
    "RouteStatusList",
    "ServerSentEvent",
    "UpstreamErrorBody",
    "UpstreamErrorDetail",
    "ref",
    "request_body",
    "response_headers",
    "schema",
]

T = TypeVar("T")

_spec = SpecificationBuilder()
JSON = "application/json"
SSE = "text/event-stream"


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _field(
    description: str, *, required: bool = False, schema: Mapping[str, Any] | None = None, **keywords: Any
) -> Any:
    """A dataclass field documented by `description` and extra schema keywords (enum, example...).

    Optional fields default to None; annotate them `X | None` where the gateway accepts a JSON null
    (it treats one like an absent field), or where an answer may hold one, which documents them as
    nullable. `schema` replaces the schema the annotation gives (for what a Python type cannot say,
    such as the minimum length of one branch of a union); the description and keywords join it.
    """
    metadata: dict[str, Any] = {"openapi": {"description": description, **keywords}}
    if schema is not None:
        metadata["schema"] = dict(schema)
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


def ref(cls: type) -> Reference:
    """A `$ref` to the component schema of a dataclass registered with `@schema`."""
    return Reference(f"#/components/schemas/{cls.__name__}")


def _ref(cls: type) -> dict[str, str]:
    """The same `$ref`, as a plain mapping (for use inside a plain schema)."""
    return {"$ref": f"#/components/schemas/{cls.__name__}"}


def _is_dataclass_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and is_dataclass(annotation)


def _property_schema(annotation: Any, keywords: dict[str, Any], override: dict[str, Any] | None) -> Any:
    if override is not None:
        return {**override, **keywords}
    args = get_args(annotation)
    present = [arg for arg in args if arg is not type(None)]
    nullable = len(present) < len(args)
    inner = present[0] if nullable and len(present) == 1 else annotation
    if nullable:
        keywords = {**keywords, "nullable": True}
    if _is_dataclass_type(inner):
        # OpenAPI 3.0 ignores keywords beside a $ref: a nullable one is wrapped in `allOf`.
        return {"allOf": [_ref(inner)], **keywords} if nullable else ref(inner)
    inner_args = get_args(inner)
    if get_origin(inner) is list and inner_args and _is_dataclass_type(inner_args[0]):
        return Array(ref(inner_args[0]), **keywords)
    return Schema.make(annotation, **keywords)


def _object_schema(cls: type, extra: bool | None, keywords: dict[str, Any]) -> Object:
    hints = get_type_hints(cls)
    properties = {
        item.name: _property_schema(
            hints[item.name], dict(item.metadata.get("openapi", {})), item.metadata.get("schema")
        )
        for item in fields(cls)
    }
    keywords = {"description": inspect.getdoc(cls), **keywords}
    required = [item.name for item in fields(cls) if item.default is MISSING and item.default_factory is MISSING]
    if required:
        keywords["required"] = required
    if extra is not None:
        keywords["additionalProperties"] = extra
    return Object(properties, **keywords)


def schema(*, extra: bool | None = None, **keywords: Any) -> Callable[[type[T]], type[T]]:
    """Class decorator: register the dataclass as component schema `#/components/schemas/<name>`.

    `extra=True` documents that other fields are allowed (and, in a request, passed through to
    vLLM); `extra=False` that there are none besides the declared ones (the gateway's own
    answers). Other keywords go to the object's schema (`anyOf`, ...).
    """

    def register(cls: type[T]) -> type[T]:
        _spec.add_component("schemas", cls.__name__, _object_schema(cls, extra, keywords))
        return cls

    return register


def _json(cls: type, description: str, status: int = 200) -> Response:
    return Response({JSON: ref(cls)}, status=_status(status), description=description)


def _status(status: int | str) -> Any:
    # A string, although sanic-ext types it as an int: the status becomes a key of the `responses`
    # object, and the app serialises the document with orjson, which refuses integer keys.
    return str(status)


def _body(cls: type, description: str) -> RequestBody:
    return RequestBody({JSON: ref(cls)}, required=True, description=description)


Handler = TypeVar("Handler", bound=Callable[..., Any])


def request_body(body: RequestBody) -> Callable[[Handler], Handler]:
    """Document a handler's request body, leaving the handler as it is.

    `openapi.definition(body=...)` documents the same, but wraps the handler in a layer that runs
    on every request (for validation, which the gateway does itself in `gateway.api.payloads`).
    """

    def attach(handler: Handler) -> Handler:
        fields = dict(body.fields)
        OperationStore()[handler].body(fields.pop("content"), **fields)
        return handler

    return attach


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

_TYPE = (
    "The class of error: `invalid_request_error`, `authentication_error`, `permission_error`, "
    "`not_found_error`, `routing_error`, `rate_limit_error`, `upstream_error`, `timeout_error`, "
    "`internal_error`."
)
_CODE = (
    "A stable code for programs, e.g. `invalid_json`, `missing_field`, `invalid_field`, `missing_api_key`, "
    "`invalid_api_key`, `model_not_allowed`, `unknown_model_key`, `model_required`, `model_not_served`, "
    "`ambiguous_model`, `request_timeout`, `payload_too_large`, `rate_limited`, `upstream_unavailable`, "
    "`upstream_protocol_error`, `no_upstream_configured`, `upstream_timeout`."
)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ErrorDetail:
    """What went wrong."""

    message: str = _field("For humans; a 400 names the offending field.", required=True)
    type: str = _field(_TYPE, required=True, example="invalid_request_error")
    code: str = _field(_CODE, required=True, example="missing_field")


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ErrorResponse:
    """An error the gateway itself reports on `/api` (and `/metrics`): `{"error": {"message", "type", "code"}}`."""

    error: ErrorDetail = _field("The error.", required=True)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class OpenAIErrorDetail:
    """What went wrong, as OpenAI's API words it."""

    message: str = _field("For humans; a 400 names the offending field.", required=True)
    type: str = _field(_TYPE, required=True, example="invalid_request_error")
    param: str | None = _field("The request field at fault (e.g. `model`), or null.", required=True, example="model")
    code: str = _field(
        f"{_CODE.removesuffix('.')}; on `/v1` a model that no route serves is `model_not_found`.",
        required=True,
        example="model_not_found",
    )


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class OpenAIErrorResponse:
    """An error the gateway itself reports on `/v1`, in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIErrorDetail = _field("The error.", required=True)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class UpstreamErrorDetail:
    """vLLM's description of an error."""

    message: str = _field("For humans.")
    type: str = _field("vLLM's error class, e.g. `BadRequestError`, `NotFoundError`.")
    param: str | None = _field("The request field at fault, or null.")
    # An integer: so the gateway's own envelopes (a string code) are told apart from vLLM's.
    code: int = _field("The HTTP status (vLLM's `ErrorInfo.code`).", example=400)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class UpstreamErrorBody:
    """An error body of vLLM, relayed unchanged: `{"error": {"message", "type", "param", "code"}}` in
    recent vLLM, `{"detail": ...}` for a path it does not serve."""

    error: UpstreamErrorDetail = _field("The error, as vLLM describes it.")
    detail: Any = _field("FastAPI's message, e.g. `Not Found`.", schema={})


def _error(status: int, description: str, envelope: type = ErrorResponse, *, relayed: bool = False) -> Response:
    """An error response in `envelope`; `relayed`: vLLM's own error bodies come with this status too."""
    body: dict[str, Any] = _ref(envelope)
    if relayed:
        body = {"anyOf": [body, _ref(UpstreamErrorBody)]}
        description += " vLLM's own errors with this status are relayed with their body unchanged."
    return Response({JSON: body}, status=_status(status), description=description)


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
    _error(408, _TIMEOUT_408),
    _error(
        409,
        "The route cannot be chosen: no route serves the model (`model_not_served`), several do "
        "(`ambiguous_model`: pick one with `modelKey` or `X-Model-Key`), or neither a model nor a "
        "`DEFAULT_MODEL_KEY` is given (`model_required`).",
    ),
    _error(413, _TOO_LARGE),
    _error(429, _RATE_LIMITED),
    _error(502, _BAD_GATEWAY),
    _error(504, _GATEWAY_TIMEOUT),
    _RELAYED,
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
    _error(408, _TIMEOUT_408, OpenAIErrorResponse),
    _error(413, _TOO_LARGE, OpenAIErrorResponse),
    _error(429, _RATE_LIMITED, OpenAIErrorResponse),
    _error(502, _BAD_GATEWAY, OpenAIErrorResponse),
    _error(504, _GATEWAY_TIMEOUT, OpenAIErrorResponse),
    _RELAYED,
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


# ------------------------------------------------------------------------------------------------
# Headers and security
# ------------------------------------------------------------------------------------------------

#: Accepted on every endpoint (`[A-Za-z0-9._:-]`, up to 128 characters; otherwise one is generated).
REQUEST_ID: dict[str, Any] = {
    "name": "X-Request-ID",
    "location": "header",
    "schema": str,
    "description": "Your id for this request, echoed in the `X-Request-ID` response header, sent upstream "
    "and logged. Up to 128 of `A-Z a-z 0-9 . _ : -`; otherwise the gateway generates one.",
}
#: Accepted by the endpoints that route to an upstream; a body's `modelKey` wins over it.
MODEL_KEY: dict[str, Any] = {
    "name": "X-Model-Key",
    "location": "header",
    "schema": str,
    "description": "The route (`MODEL_ROUTE_<KEY>`) to send the request to. Without it (and without a "
    "`modelKey` in an `/api` body) the route is the one whose vLLM lists the model, or `DEFAULT_MODEL_KEY`.",
}

#: The headers of the endpoints that route to an upstream (a list: what sanic-ext's signature takes).
ROUTED_HEADERS: list[Any] = [MODEL_KEY, REQUEST_ID]

# The response headers, as `#/components/headers/<name>`; `response_headers` says which response has which.
_RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's `X-Request-ID` if it was valid, else a generated one.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "X-RateLimit-Limit": {
        "description": "`RATE_LIMIT_PER_MIN` (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests this client may still send now (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the budget is full again (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {
        "description": "Seconds to wait before the next request.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": 'The scheme to authenticate with: `Bearer realm="gateway"`.',
        "required": True,
        "schema": {"type": "string"},
    },
    "x-should-retry": {
        "description": "`false` when no retry can help (`no_upstream_configured`); the OpenAI SDKs obey it.",
        "schema": {"type": "string", "enum": ["false"]},
    },
}
for _name, _header in _RESPONSE_HEADERS.items():
    _spec.add_component("headers", _name, _header)
_RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_STATUS_HEADERS = {"401": ("WWW-Authenticate",), "429": ("Retry-After",), "502": ("x-should-retry",)}


def response_headers(status: str, rate_limited: bool) -> dict[str, dict[str, str]]:
    """The headers of one documented response (`status`: `"200"`, ..., `"default"`), as `$ref`s.

    Every answer has `X-Request-ID`; every answer of a rate-limited endpoint may have the
    `X-RateLimit-*` headers; a 401 has `WWW-Authenticate`, a 429 `Retry-After`, a 502 may have
    `x-should-retry`.
    """
    names = ["X-Request-ID", *(_RATE_HEADERS if rate_limited else ()), *_STATUS_HEADERS.get(status, ())]
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


#: The schemes, as alternatives: either header carries one of the keys of `API_KEY`.
SECURITY_SCHEMES = ("ApiKey", "Bearer")
_spec.add_security_scheme(
    "ApiKey",
    "apiKey",
    location="header",
    name="X-API-Key",
    description="One of the comma-separated keys of `API_KEY`. Not needed when `API_KEY` is unset.",
)
_spec.add_security_scheme(
    "Bearer",
    "http",
    scheme="bearer",
    description="`Authorization: Bearer <key>`, as OpenAI SDKs send it; same keys as `X-API-Key`.",
)
for _scheme in SECURITY_SCHEMES:  # the document-wide default: either scheme will do
    _spec.secured(_scheme)
#: For `@openapi.secured(PUBLIC)`: the operation needs no key (an empty security requirement).
PUBLIC: dict[str, list[str]] = {}

for _tag, _description in (
    ("health", "Liveness; never needs a key nor counts against the rate limit."),
    ("models", "The models every route serves."),
    ("routes", "The routes and their replicas, as one worker sees them."),
    ("chat", "The gateway's own chat API: a `message` in, vLLM's chat completion out."),
    ("embeddings", "The gateway's own embeddings API."),
    ("openai", "The OpenAI-compatible surface (`base_url=http://HOST:PORT/v1`): bodies go upstream unchanged."),
    ("metrics", "Prometheus metrics, summed over all worker processes (absent when `PROMETHEUS_ENABLE=false`)."),
):
    _spec.tag(_tag, _description)


# ------------------------------------------------------------------------------------------------
# Health, models and routes: answers the gateway builds itself
# ------------------------------------------------------------------------------------------------


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class Health:
    """The gateway is up; `vllm` is the default route's answer to `GET /models` (within 2 s)."""

    ok: bool = _field("Always true: the gateway answered.", required=True, enum=[True])
    vllm: str = _field(
        "`ok`: the route answered; `unavailable`: unreachable, timed out or 5xx; `unknown`: another status; "
        "`unconfigured`: no route.",
        required=True,
        enum=["ok", "unavailable", "unconfigured", "unknown"],
    )


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """One route that serves the model."""

    source: str = _field("The route key (`MODEL_ROUTE_<KEY>`).", required=True, example="tiny")
    latency_ms: int = _field("How long the route took to list its models.", required=True, minimum=0)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ApiModel:
    """A model, once, with every route that serves it."""

    id: str = _field("The model name.", required=True)
    object: str = _field("Always `model`.", required=True, enum=["model"])
    sources: list[ModelSource] = _field("The routes serving it.", required=True)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ApiModelList:
    """The models of every route that answered, de-duplicated by id, filtered by `ALLOWED_MODELS`."""

    object: str = _field("Always `list`.", required=True, enum=["list"])
    data: list[ApiModel] = _field("The models.", required=True)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class OpenAIModel:
    """A model as the first route listing it describes it (vLLM's fields, unchanged)."""

    id: str = _field("The model name.", required=True)
    object: str = _field("`model`.", required=True)
    created: int = _field("Unix time.", schema=Long().serialize())
    owned_by: str = _field("`vllm`.")
    root: str | None = _field("The model it was loaded from (vLLM), or null.")
    parent: str | None = _field("The base model of a LoRA adapter (vLLM), or null.")
    max_model_len: int | None = _field("The context length (vLLM), or null.")


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class OpenAIModelList:
    """OpenAI's model list: each model once, filtered by `ALLOWED_MODELS`."""

    object: str = _field("Always `list`.", required=True, enum=["list"])
    data: list[OpenAIModel] = _field("The models.", required=True)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ReplicaStatus:
    """One replica of a route, as the answering worker sees it."""

    url: str = _field("The replica's base URL.", required=True)
    state: str = _field("In rotation, or ejected after a failure.", required=True, enum=["healthy", "ejected"])
    in_flight: int = _field("Requests this worker has in flight on it.", required=True, minimum=0)
    latency_ms: float | None = _field(
        "Moving average of its recent answer times; null before the first answer.", required=True
    )
    requests: int = _field("Attempts this worker sent it.", required=True, minimum=0)
    errors: int = _field("Of those, failed ones.", required=True, minimum=0)
    ejections: int = _field("Consecutive ejections (its cool-down doubles with each).", required=True, minimum=0)
    last_error: str | None = _field("The last failure; null if it never failed.", required=True)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class RouteStatus:
    """A route key and its replicas."""

    key: str = _field("The route key (`MODEL_ROUTE_<KEY>`).", required=True)
    replicas: list[ReplicaStatus] = _field("Its replicas, in configured order.", required=True)


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class RouteStatusList:
    """Every route, as seen by one worker process (each keeps its own view of replica health)."""

    worker: int = _field("The pid of the worker that answered.", required=True)
    routes: list[RouteStatus] = _field("The routes.", required=True)


HEALTH = _json(Health, "Always 200 while the gateway runs.")
ROUTE_STATUS = _json(RouteStatusList, "Routes and replicas.")
API_MODEL_LIST = _json(ApiModelList, "The merged model list.")
OPENAI_MODEL_LIST = _json(OpenAIModelList, "The merged model list, in OpenAI's format.")
METRICS_TEXT = Response(
    {"text/plain": String(example='gw_requests_total{method="POST",path="/api/chat",status="200"} 10.0')},
    status=_status(200),
    description="Prometheus text exposition format (`text/plain; version=0.0.4`).",
)


# ------------------------------------------------------------------------------------------------
# Request bodies. `/api`'s are checked by the gateway (`gateway.api.payloads`); `/v1`'s go upstream
# byte for byte, with only `model` and `stream` read (and checked). The other constraints given
# here are vLLM's, which answers 400 when they are broken.
# ------------------------------------------------------------------------------------------------


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of the conversation (OpenAI's format)."""

    role: str = _field("Who says it: `system`, `user`, `assistant`, `tool`, ...", required=True, example="user")
    content: str | list[dict[str, Any]] | None = _field("Text, or a list of content parts.")


_MODEL = "The model; default `DEFAULT_MODEL_NAME`. Also chooses the route when no `modelKey` is given."
_MODEL_KEY = "The route to use (`MODEL_ROUTE_<KEY>`); wins over the `X-Model-Key` header."
_TEMPERATURE = "Sampling temperature (an integer is fine; vLLM refuses a negative one)."
_MAX_TOKENS = "At most this many tokens in the answer (vLLM refuses fewer than 1, or more than the context)."


def _texts(**keywords: Any) -> dict[str, Any]:
    """A text, or a non-empty list (of texts or token ids): what vLLM takes as `input` or `prompt`."""
    return {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {}}], **keywords}


@schema(
    extra=True,
    anyOf=[
        {"required": ["message"]},
        {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
    ],
)
@dataclass(frozen=True, kw_only=True)
class ApiChatRequest:
    """`system` and `message` become the `messages` list (a non-empty `messages` list may be sent instead of
    `message`). Other OpenAI sampling fields (`top_p`, `stop`, `seed`, ...) go to vLLM as they are, and vLLM
    checks them."""

    message: str = _field("The user's message (not empty).", minLength=1, example="Hello!")
    messages: list[ChatMessage] | None = _field("The whole conversation, instead of `message`.", minItems=1)
    model: str | None = _field(_MODEL, example="Qwen/Qwen2.5-0.5B-Instruct")
    modelKey: str | None = _field(_MODEL_KEY, example="tiny")
    system: str | None = _field("A system prompt, sent before the message.")
    temperature: float | None = _field(_TEMPERATURE, minimum=0, example=0.7)
    max_tokens: int | None = _field(_MAX_TOKENS, minimum=1, example=256)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ApiEmbeddingsRequest:
    """Other OpenAI embeddings fields (`encoding_format`, `dimensions`, ...) go to vLLM as they are."""

    input: str | list[Any] = _field(
        "A text, or a list of texts (or of token-id lists).",
        required=True,
        schema=_texts(example="The food was delicious."),
    )
    model: str | None = _field(_MODEL)
    modelKey: str | None = _field(_MODEL_KEY)


API_CHAT_BODY = _body(ApiChatRequest, "A chat message: `message` (or `messages`) is required.")
API_EMBEDDINGS_BODY = _body(ApiEmbeddingsRequest, "The input to embed.")

_V1_MODEL = "The model; chooses the route unless `X-Model-Key` is sent."
_STREAM = "`true`: the answer comes as `text/event-stream`."


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class OpenAIChatRequest:
    """OpenAI's chat completions body; every other field goes to vLLM unchanged."""

    messages: list[ChatMessage] = _field("The conversation.", required=True)
    model: str | None = _field(_V1_MODEL)
    stream: bool | None = _field(_STREAM)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class OpenAICompletionRequest:
    """OpenAI's (legacy) completions body; every other field goes to vLLM unchanged."""

    prompt: str | list[Any] = _field(
        "The prompt: a text, texts, or token ids.", required=True, schema=_texts(example="Once upon a time")
    )
    model: str | None = _field(_V1_MODEL)
    stream: bool | None = _field(_STREAM)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class OpenAIEmbeddingsRequest:
    """OpenAI's embeddings body; every other field goes to vLLM unchanged."""

    input: str | list[Any] = _field("A text, texts, or token ids.", required=True, schema=_texts())
    model: str | None = _field(_V1_MODEL)


OPENAI_CHAT_BODY = _body(OpenAIChatRequest, "Sent upstream byte for byte.")
OPENAI_COMPLETION_BODY = _body(OpenAICompletionRequest, "Sent upstream byte for byte.")
OPENAI_EMBEDDINGS_BODY = _body(OpenAIEmbeddingsRequest, "Sent upstream byte for byte.")


# ------------------------------------------------------------------------------------------------
# Upstream answers, relayed unchanged: the gateway checks nothing in them, so nothing is required,
# and fields that vLLM may leave null are nullable.
# ------------------------------------------------------------------------------------------------

_UNIX_TIME = Long(description="Unix time.").serialize()
_USAGE = "`prompt_tokens`, `completion_tokens`, `total_tokens`; null when vLLM gives none."


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ChatCompletion:
    """vLLM's `chat.completion`, unchanged."""

    id: str = _field("The completion's id.")
    object: str = _field("`chat.completion`.")
    created: int = _field("Unix time.", schema=_UNIX_TIME)
    model: str | None = _field("The model that answered, as the upstream names it (null if it does not).")
    choices: list[dict[str, Any]] = _field("The answers: `message`, `finish_reason`, ...")
    usage: dict[str, Any] | None = _field(_USAGE)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class Completion:
    """vLLM's `text_completion`, unchanged."""

    id: str = _field("The completion's id.")
    object: str = _field("`text_completion`.")
    created: int = _field("Unix time.", schema=_UNIX_TIME)
    model: str | None = _field("The model that answered, as the upstream names it (null if it does not).")
    choices: list[dict[str, Any]] = _field("The answers: `text`, `finish_reason`, ...")
    usage: dict[str, Any] | None = _field(_USAGE)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class EmbeddingList:
    """vLLM's embeddings answer, unchanged (`embedding` is a list of floats, or base64 with
    `encoding_format: base64`)."""

    object: str = _field("`list`.")
    data: list[dict[str, Any]] = _field("One `{object, index, embedding}` per input.")
    model: str | None = _field("The model that answered, as the upstream names it (null if it does not).")
    usage: dict[str, Any] | None = _field("`prompt_tokens`, `total_tokens`; null when vLLM gives none.")


@schema(extra=False)
@dataclass(frozen=True, kw_only=True)
class ServerSentEvent:
    """One event of a `text/event-stream` answer (comment lines such as `: keepalive` are not events).

    On the wire: `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[...]}`, a blank line,
    ..., `data: [DONE]`, a blank line."""

    data: str = _field(
        "One of vLLM's chunks as JSON, unchanged, or `[DONE]` at the end; after `event: error`, the error "
        "envelope as JSON.",
        required=True,
        example='{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[]}',
    )
    event: str = _field(
        "Absent (that is, `message`) for vLLM's chunks and `[DONE]`; `error` for a failure after the stream started.",
        enum=["message", "error"],
    )
    id: str = _field("The event's id (vLLM sends none).")
    retry: int = _field("A reconnection delay in ms (vLLM sends none).")


_EVENTS_DESCRIPTION = (
    "Server-sent events: vLLM's events, forwarded as they arrive; a `: keepalive` comment whenever nothing was "
    "sent for `SSE_HEARTBEAT_SECONDS`; always ending with `data: [DONE]`. A failure after the stream started "
    "comes in-band: `event: error` with the error envelope as data, then `data: [DONE]`. The schema describes "
    "one event."
)

CHAT_COMPLETION = _json(ChatCompletion, "vLLM's chat completion, unchanged.")
CHAT_STREAM = Response({SSE: ref(ServerSentEvent)}, status=_status(200), description=_EVENTS_DESCRIPTION)
CHAT_COMPLETION_OR_STREAM = Response(
    {JSON: ref(ChatCompletion), SSE: ref(ServerSentEvent)},
    status=_status(200),
    description=f"vLLM's chat completion as JSON; with `stream: true`: {_EVENTS_DESCRIPTION}",
)
COMPLETION_OR_STREAM = Response(
    {JSON: ref(Completion), SSE: ref(ServerSentEvent)},
    status=_status(200),
    description=f"vLLM's completion as JSON; with `stream: true`: {_EVENTS_DESCRIPTION}",
)
EMBEDDINGS = _json(EmbeddingList, "vLLM's embeddings, unchanged.")
