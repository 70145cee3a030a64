"""
The OpenAPI description of the HTTP surface (served at `/docs/openapi.json`, UI at `/docs`).

Documentation only: requests are parsed and checked in `gateway.payloads`, and nothing here runs
per request. The blueprints attach these pieces to their handlers with `@openapi.definition`:

- request bodies (`API_CHAT_BODY`, ...) and success responses (`CHAT_COMPLETION`, ...),
  each built on a dataclass below that becomes a component schema;
- the error responses, all in the `ErrorResponse` envelope, as shared lists (`ROUTED_ERRORS`,
  `LISTING_ERRORS`, `METRICS_ERRORS`);
- the `X-Request-ID` and `X-Model-Key` header parameters;
- the two API-key security schemes (`X-API-Key`, `Authorization: Bearer`), required by every
  operation unless it says otherwise (only `/health` does).

Why dataclasses are turned into schemas here rather than by `openapi.component`: sanic-ext
25.12 converts a dataclass without a `required` list and without the class's docstring, and adds a
`title` made from each property's name. `_object_schema` builds the same `Object` from the dataclass fields,
with `required` (the fields without a default), the docstring as description, and `$ref`s for
nested dataclasses. Per-field schema keywords (description, enum, example) come from the field's
`metadata["openapi"]`, the convention sanic-ext itself reads.

The component schemas, the security schemes and the tags are registered on sanic-ext's
specification builder when this module is imported. That builder is a process-wide singleton
(the object `app.ext.openapi` returns), so this works without touching the app factory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from sanic_ext.extensions.openapi.builders import OperationStore, SpecificationBuilder
from sanic_ext.extensions.openapi.definitions import Reference, RequestBody, Response
from sanic_ext.extensions.openapi.types import Array, Object, Schema, String

__all__ = [
    "API_CHAT_BODY",
    "API_EMBEDDINGS_BODY",
    "API_MODEL_LIST",
    "CHAT_COMPLETION",
    "CHAT_COMPLETION_OR_STREAM",
    "CHAT_STREAM",
    "COMPLETION_OR_STREAM",
    "EMBEDDINGS",
    "HEALTH",
    "LISTING_ERRORS",
    "METRICS_ERRORS",
    "METRICS_TEXT",
    "MODEL_KEY",
    "OPENAI_CHAT_BODY",
    "OPENAI_COMPLETION_BODY",
    "OPENAI_EMBEDDINGS_BODY",
    "OPENAI_MODEL_LIST",
    "PUBLIC",
    "REQUEST_ID",
    "ROUTED_ERRORS",
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
    "OpenAIModel",
    "OpenAIModelList",
    "UpstreamErrorBody",
    "ref",
    "request_body",
    "schema",
]

T = TypeVar("T")

_spec = SpecificationBuilder()
JSON = "application/json"
SSE = "text/event-stream"


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _field(description: str, *, required: bool = False, **keywords: Any) -> Any:
    """A dataclass field documented by `description` and extra schema keywords (enum, example...).

    Optional fields default to None; annotate them `X | None` where the gateway accepts a JSON null
    (it treats one like an absent field), which documents them as nullable.
    """
    metadata = {"openapi": {"description": description, **keywords}}
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


def ref(cls: type) -> Reference:
    """A `$ref` to the component schema of a dataclass registered with `@schema`."""
    return Reference(f"#/components/schemas/{cls.__name__}")


def _is_dataclass_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and is_dataclass(annotation)


def _property_schema(annotation: Any, keywords: dict[str, Any]) -> Schema:
    if _is_dataclass_type(annotation):
        return ref(annotation)  # OpenAPI 3.0 ignores keywords beside a $ref
    args = get_args(annotation)
    if get_origin(annotation) is list and args and _is_dataclass_type(args[0]):
        return Array(ref(args[0]), **keywords)
    return Schema.make(annotation, **keywords)


def _object_schema(cls: type, extra: bool) -> Object:
    hints = get_type_hints(cls)
    properties = {
        item.name: _property_schema(hints[item.name], dict(item.metadata.get("openapi", {}))) for item in fields(cls)
    }
    keywords: dict[str, Any] = {"description": inspect.getdoc(cls)}
    required = [item.name for item in fields(cls) if item.default is MISSING and item.default_factory is MISSING]
    if required:
        keywords["required"] = required
    if extra:
        keywords["additionalProperties"] = True
    return Object(properties, **keywords)


def schema(*, extra: bool = False) -> Callable[[type[T]], type[T]]:
    """Class decorator: register the dataclass as component schema `#/components/schemas/<name>`.

    `extra=True` documents that other fields are allowed (and passed through to vLLM).
    """

    def register(cls: type[T]) -> type[T]:
        _spec.add_component("schemas", cls.__name__, _object_schema(cls, extra))
        return cls

    return register


def _json(cls: type, description: str, status: int = 200) -> Response:
    return Response({JSON: ref(cls)}, status=_status(status), description=description)


def _status(status: int) -> Any:
    # A string, although sanic-ext types it as an int: the status becomes a key of the `responses`
    # object, and the app serialises the document with orjson, which refuses integer keys.
    return str(status)


def _body(cls: type, description: str) -> RequestBody:
    return RequestBody({JSON: ref(cls)}, required=True, description=description)


Handler = TypeVar("Handler", bound=Callable[..., Any])


def request_body(body: RequestBody) -> Callable[[Handler], Handler]:
    """Document a handler's request body, leaving the handler as it is.

    `openapi.definition(body=...)` documents the same, but wraps the handler in a layer that runs
    on every request (for validation, which the gateway does itself in `gateway.payloads`).
    """

    def attach(handler: Handler) -> Handler:
        fields = dict(body.fields)
        OperationStore()[handler].body(fields.pop("content"), **fields)
        return handler

    return attach


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@schema()
@dataclass(frozen=True, kw_only=True)
class ErrorDetail:
    """What went wrong."""

    message: str = _field("For humans; a 400 names the offending field.", required=True)
    type: str = _field(
        "The class of error: `invalid_request_error`, `authentication_error`, `permission_error`, "
        "`not_found_error`, `routing_error`, `rate_limit_error`, `upstream_error`, `timeout_error`, "
        "`internal_error` (vLLM's relayed errors have their own, e.g. `BadRequestError`).",
        required=True,
        example="invalid_request_error",
    )
    code: str | int = _field(
        "A stable code for programs (vLLM's relayed errors may carry their HTTP status instead), e.g. `invalid_json`, `missing_field`, `invalid_field`, `missing_api_key`, "
        "`invalid_api_key`, `model_not_allowed`, `unknown_model_key`, `model_required`, `model_not_served`, "
        "`ambiguous_model`, `payload_too_large`, `rate_limited`, `upstream_unavailable`, "
        "`upstream_protocol_error`, `no_upstream_configured`, `upstream_timeout`.",
        required=True,
        example="missing_field",
    )


@schema()
@dataclass(frozen=True, kw_only=True)
class ErrorResponse:
    """Every error the gateway itself reports: `{"error": {"message", "type", "code"}}`."""

    error: ErrorDetail = _field("The error.", required=True)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class UpstreamErrorBody:
    """An error body of vLLM, relayed unchanged (recent vLLM uses the same `error` envelope)."""

    error: ErrorDetail = _field("The error, as vLLM describes it.")


def _error(status: int, description: str) -> Response:
    return _json(ErrorResponse, description, status)


_BAD_REQUEST = _error(
    400,
    "Malformed JSON, a body that is not a JSON object, or a field of the wrong type; the message names "
    "the field (codes `invalid_json`, `missing_field`, `invalid_field`). vLLM's own 400s (for example "
    "`max_tokens` beyond the context) are relayed with their body.",
)
_UNAUTHORIZED = _error(
    401,
    "No API key, or a wrong one (only when the gateway has `API_KEY` set). Send `X-API-Key: <key>` or "
    "`Authorization: Bearer <key>`.",
)
_FORBIDDEN = _error(403, "The model is not in the gateway's `ALLOWED_MODELS` (code `model_not_allowed`).")
_UNKNOWN_KEY = _error(404, "`modelKey` (or `X-Model-Key`) names no configured route (code `unknown_model_key`).")
_CONFLICT = _error(
    409,
    "The route cannot be chosen: no route serves the model (`model_not_served`), several do "
    "(`ambiguous_model`: pick one with `modelKey` or `X-Model-Key`), or neither a model nor a "
    "`DEFAULT_MODEL_KEY` is given (`model_required`).",
)
_TOO_LARGE = _error(413, "The body is larger than `MAX_BODY_BYTES` (code `payload_too_large`).")
_RATE_LIMITED = _error(
    429,
    "Over `RATE_LIMIT_PER_MIN` requests per minute from this client IP. The `Retry-After` header gives the "
    "seconds to wait; `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` come with every "
    "rate-limited endpoint's responses.",
)
_BAD_GATEWAY = _error(
    502,
    "The upstream is unreachable or gave a broken answer (codes `upstream_unavailable`, "
    "`upstream_protocol_error`, `no_upstream_configured`).",
)
_TIMEOUT = _error(504, "The upstream did not answer in time (code `upstream_timeout`).")
_RELAYED = Response(
    {JSON: ref(UpstreamErrorBody)},
    status="default",
    description="Any other error status of vLLM, relayed with its status and body unchanged.",
)

#: Endpoints that route a request to an upstream: every error the gateway can give, and vLLM's.
ROUTED_ERRORS = (
    _BAD_REQUEST,
    _UNAUTHORIZED,
    _FORBIDDEN,
    _UNKNOWN_KEY,
    _CONFLICT,
    _TOO_LARGE,
    _RATE_LIMITED,
    _BAD_GATEWAY,
    _TIMEOUT,
    _RELAYED,
)
#: The model lists: a route that is down is left out, so only admission can fail.
LISTING_ERRORS = (_UNAUTHORIZED, _RATE_LIMITED)
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
for _name in SECURITY_SCHEMES:  # the document-wide default: either scheme will do
    _spec.secured(_name)
#: For `@openapi.secured(PUBLIC)`: the operation needs no key (an empty security requirement).
PUBLIC: dict[str, list[str]] = {}

for _tag, _description in (
    ("health", "Liveness; never needs a key nor counts against the rate limit."),
    ("models", "The models every route serves."),
    ("chat", "The gateway's own chat API: a `message` in, vLLM's chat completion out."),
    ("embeddings", "The gateway's own embeddings API."),
    ("openai", "The OpenAI-compatible surface (`base_url=http://HOST:PORT/v1`): bodies go upstream unchanged."),
    ("metrics", "Prometheus metrics, summed over all worker processes (absent when `PROMETHEUS_ENABLE=false`)."),
):
    _spec.tag(_tag, _description)


# ------------------------------------------------------------------------------------------------
# Health and models
# ------------------------------------------------------------------------------------------------


@schema()
@dataclass(frozen=True, kw_only=True)
class Health:
    """The gateway is up; `vllm` is the default route's answer to `GET /models` (within 2 s)."""

    ok: bool = _field("Always true: the gateway answered.", required=True)
    vllm: str = _field(
        "`ok`: the route answered; `unavailable`: unreachable, timed out or 5xx; `unknown`: another status; "
        "`unconfigured`: no route.",
        required=True,
        enum=["ok", "unavailable", "unconfigured", "unknown"],
    )


@schema()
@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """One route that serves the model."""

    source: str = _field("The route key (`MODEL_ROUTE_<KEY>`).", required=True, example="tiny")
    latency_ms: int = _field("How long the route took to list its models.", required=True)


@schema()
@dataclass(frozen=True, kw_only=True)
class ApiModel:
    """A model, once, with every route that serves it."""

    id: str = _field("The model name.", required=True)
    object: str = _field("Always `model`.", required=True, enum=["model"])
    sources: list[ModelSource] = _field("The routes serving it.", required=True)


@schema()
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
    created: int = _field("Unix time.")
    owned_by: str = _field("`vllm`.")


@schema()
@dataclass(frozen=True, kw_only=True)
class OpenAIModelList:
    """OpenAI's model list: each model once, filtered by `ALLOWED_MODELS`."""

    object: str = _field("Always `list`.", required=True, enum=["list"])
    data: list[OpenAIModel] = _field("The models.", required=True)


@schema()
@dataclass(frozen=True, kw_only=True)
class ReplicaStatus:
    """One replica of a route, as the answering worker sees it."""

    url: str = _field("The replica's base URL.", required=True)
    state: str = _field("In rotation, or ejected after a failure.", required=True, enum=["healthy", "ejected"])
    in_flight: int = _field("Requests this worker has in flight on it.", required=True)
    latency_ms: float = _field("Moving average of its recent answer times (null before the first).")
    requests: int = _field("Attempts this worker sent it.", required=True)
    errors: int = _field("Of those, failed ones.", required=True)
    ejections: int = _field("Consecutive ejections (its cool-down doubles with each).", required=True)
    last_error: str = _field("The last failure, or null.")


@schema()
@dataclass(frozen=True, kw_only=True)
class RouteStatus:
    """A route key and its replicas."""

    key: str = _field("The route key (`MODEL_ROUTE_<KEY>`).", required=True)
    replicas: list[ReplicaStatus] = _field("Its replicas, in configured order.", required=True)


@schema()
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
    description="Prometheus text exposition format.",
)


# ------------------------------------------------------------------------------------------------
# The gateway's own /api bodies
# ------------------------------------------------------------------------------------------------

_MODEL = "The model; default `DEFAULT_MODEL_NAME`. Also chooses the route when no `modelKey` is given."
_MODEL_KEY = "The route to use (`MODEL_ROUTE_<KEY>`); wins over the `X-Model-Key` header."


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ApiChatRequest:
    """`system` and `message` become the `messages` list. Other OpenAI sampling fields (`top_p`, `stop`,
    `seed`, ...) go to vLLM as they are, and vLLM checks them."""

    message: str = _field("The user's message (not empty).", required=True, example="Hello!")
    model: str | None = _field(_MODEL, example="Qwen/Qwen2.5-0.5B-Instruct")
    modelKey: str | None = _field(_MODEL_KEY, example="tiny")
    system: str | None = _field("A system prompt, sent before the message.")
    temperature: float | None = _field("Sampling temperature (an integer is fine).", example=0.7)
    max_tokens: int | None = _field("At most this many tokens in the answer.", example=256)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ApiEmbeddingsRequest:
    """Other OpenAI embeddings fields (`encoding_format`, `dimensions`, ...) go to vLLM as they are."""

    input: str | list[Any] = _field(
        "A text, or a list of texts (or of token-id lists).", required=True, example="The food was delicious."
    )
    model: str | None = _field(_MODEL)
    modelKey: str | None = _field(_MODEL_KEY)


API_CHAT_BODY = _body(ApiChatRequest, "A chat message; `message` is required.")
API_EMBEDDINGS_BODY = _body(ApiEmbeddingsRequest, "The input to embed.")


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible /v1 bodies: forwarded unchanged; only `model` and `stream` are read
# ------------------------------------------------------------------------------------------------

_V1_MODEL = "The model; chooses the route unless `X-Model-Key` is sent."
_STREAM = "`true`: the answer comes as `text/event-stream`."


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of the conversation (OpenAI's format)."""

    role: str = _field("Who says it: `system`, `user`, `assistant`, `tool`, ...", required=True, example="user")
    content: str | list[dict[str, Any]] | None = _field("Text, or a list of content parts.")


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

    prompt: str | list[Any] = _field("The prompt: a text, texts, or token ids.", required=True)
    model: str | None = _field(_V1_MODEL)
    stream: bool | None = _field(_STREAM)


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class OpenAIEmbeddingsRequest:
    """OpenAI's embeddings body; every other field goes to vLLM unchanged."""

    input: str | list[Any] = _field("A text, texts, or token ids.", required=True)
    model: str | None = _field(_V1_MODEL)


OPENAI_CHAT_BODY = _body(OpenAIChatRequest, "Sent upstream byte for byte.")
OPENAI_COMPLETION_BODY = _body(OpenAICompletionRequest, "Sent upstream byte for byte.")
OPENAI_EMBEDDINGS_BODY = _body(OpenAIEmbeddingsRequest, "Sent upstream byte for byte.")


# ------------------------------------------------------------------------------------------------
# Upstream answers, relayed unchanged
# ------------------------------------------------------------------------------------------------


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class ChatCompletion:
    """vLLM's `chat.completion`, unchanged."""

    id: str = _field("The completion's id.")
    object: str = _field("`chat.completion`.")
    created: int = _field("Unix time.")
    model: str = _field("The model that answered.")
    choices: list[dict[str, Any]] = _field("The answers: `message`, `finish_reason`, ...")
    usage: dict[str, Any] | None = _field("`prompt_tokens`, `completion_tokens`, `total_tokens`.")


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class Completion:
    """vLLM's `text_completion`, unchanged."""

    id: str = _field("The completion's id.")
    object: str = _field("`text_completion`.")
    created: int = _field("Unix time.")
    model: str = _field("The model that answered.")
    choices: list[dict[str, Any]] = _field("The answers: `text`, `finish_reason`, ...")
    usage: dict[str, Any] | None = _field("`prompt_tokens`, `completion_tokens`, `total_tokens`.")


@schema(extra=True)
@dataclass(frozen=True, kw_only=True)
class EmbeddingList:
    """vLLM's embeddings answer, unchanged."""

    object: str = _field("`list`.")
    data: list[dict[str, Any]] = _field("One `{object, index, embedding}` per input.")
    model: str = _field("The model that answered.")
    usage: dict[str, Any] | None = _field("`prompt_tokens`, `total_tokens`.")


_EVENTS = String(
    description="Server-sent events.",
    example='data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[...]}\n\n'
    ": keepalive\n\n"
    "data: [DONE]\n\n",
)
_EVENTS_DESCRIPTION = (
    "vLLM's events, forwarded as they arrive; a `: keepalive` comment whenever nothing was sent for "
    "`SSE_HEARTBEAT_SECONDS`; always ending with `data: [DONE]`. A failure after the stream started comes "
    "in-band: `event: error` with the error envelope as data, then `data: [DONE]`."
)

CHAT_COMPLETION = _json(ChatCompletion, "vLLM's chat completion, unchanged.")
CHAT_STREAM = Response({SSE: _EVENTS}, status=_status(200), description=_EVENTS_DESCRIPTION)
CHAT_COMPLETION_OR_STREAM = Response(
    {JSON: ref(ChatCompletion), SSE: _EVENTS},
    status=_status(200),
    description=f"JSON, or with `stream: true` an event stream: {_EVENTS_DESCRIPTION}",
)
COMPLETION_OR_STREAM = Response(
    {JSON: ref(Completion), SSE: _EVENTS},
    status=_status(200),
    description=f"JSON, or with `stream: true` an event stream: {_EVENTS_DESCRIPTION}",
)
EMBEDDINGS = _json(EmbeddingList, "vLLM's embeddings, unchanged.")
