"""
The documented answers: the ones the gateway builds itself (health, model lists, route status),
which promise every field, and vLLM's, relayed unchanged, which promise none (the gateway checks
nothing in them, and fields that vLLM may leave null are nullable).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sanic_ext.extensions.openapi.definitions import Response

from gateway.api.openapi.schema import JSON, SSE, component, json_response, optional, ref, status
from gateway.settings import RoutingPolicy

__all__ = [
    "API_MODEL_LIST",
    "CHAT_COMPLETION",
    "CHAT_COMPLETION_OR_STREAM",
    "CHAT_STREAM",
    "COMPLETION_OR_STREAM",
    "EMBEDDINGS",
    "HEALTH",
    "METRICS_TEXT",
    "OPENAI_MODEL_LIST",
    "ROUTE_STATUS",
]

_OWN = ConfigDict(extra="forbid")  # exactly these fields
_RELAYED = ConfigDict(extra="allow")  # these and whatever else vLLM sends
_UNIX_TIME: dict[str, Any] = {"format": "int64"}  # Unix time outlives int32
_ANSWERING_MODEL = "The model that answered, as the upstream names it (null if it does not)."
_USAGE = "`prompt_tokens`, `completion_tokens`, `total_tokens`; null when vLLM gives none."


# The gateway's own answers


@component
class Health(BaseModel):
    """The gateway is up; `vllm` is the default route's answer to `GET /models` (within 2 s)."""

    model_config = _OWN
    ok: Literal[True] = Field(description="Always true: the gateway answered.")
    vllm: Literal["ok", "unavailable", "unconfigured", "unknown"] = Field(
        description="`ok`: the route answered; `unavailable`: unreachable, timed out or 5xx; `unknown`: another "
        "status; `unconfigured`: no route."
    )


class ModelSource(BaseModel):
    """One route that serves the model."""

    model_config = _OWN
    source: str = Field(description="The route key (`MODEL_ROUTE_<KEY>`).", examples=["tiny"])
    latency_ms: int = Field(description="How long the route took to list its models.", json_schema_extra={"minimum": 0})


class ApiModel(BaseModel):
    """A model, once, with every route that serves it."""

    model_config = _OWN
    id: str = Field(description="The model name.")
    object: Literal["model"] = Field(description="Always `model`.")
    sources: list[ModelSource] = Field(description="The routes serving it.")


@component
class ApiModelList(BaseModel):
    """The models of every route that answered, de-duplicated by id, filtered by `ALLOWED_MODELS`."""

    model_config = _OWN
    object: Literal["list"] = Field(description="Always `list`.")
    data: list[ApiModel] = Field(description="The models.")


class OpenAIModel(BaseModel):
    """A model as the first route listing it describes it (vLLM's fields, unchanged)."""

    model_config = _RELAYED
    id: str = Field(description="The model name.")
    object: str = Field(description="`model`.")
    created: int = optional(description="Unix time.", json_schema_extra=_UNIX_TIME)
    owned_by: str = optional(description="`vllm`.")
    root: str | None = Field(None, description="The model it was loaded from (vLLM), or null.")
    parent: str | None = Field(None, description="The base model of a LoRA adapter (vLLM), or null.")
    max_model_len: int | None = Field(None, description="The context length (vLLM), or null.")


@component
class OpenAIModelList(BaseModel):
    """OpenAI's model list: each model once, filtered by `ALLOWED_MODELS`."""

    model_config = _OWN
    object: Literal["list"] = Field(description="Always `list`.")
    data: list[OpenAIModel] = Field(description="The models.")


_COUNT: dict[str, Any] = {"minimum": 0}


class EngineLoad(BaseModel):
    """vLLM's own figures for the replica, from its `/metrics` (read once per machine)."""

    model_config = _OWN
    waiting: int = Field(description="`vllm:num_requests_waiting`.", json_schema_extra=_COUNT)
    running: int = Field(description="`vllm:num_requests_running`.", json_schema_extra=_COUNT)
    kv_cache_usage: float = Field(description="`vllm:kv_cache_usage_perc`, from 0 to 1.")
    age_ms: int = Field(description="How long ago they were read.", json_schema_extra=_COUNT)


class ReplicaStatus(BaseModel):
    """One replica of a route, as the answering worker sees it."""

    model_config = _OWN
    url: str = Field(description="The replica's base URL.")
    state: Literal["healthy", "ejected"] = Field(description="In rotation, or ejected after a failure.")
    in_flight: int = Field(description="Requests this worker has in flight on it.", json_schema_extra=_COUNT)
    latency_ms: float | None = Field(
        description="Moving average of its recent answer times; null before the first answer."
    )
    requests: int = Field(description="Attempts this worker sent it.", json_schema_extra=_COUNT)
    errors: int = Field(description="Of those, failed ones.", json_schema_extra=_COUNT)
    ejections: int = Field(
        description="Consecutive ejections (its cool-down doubles with each).", json_schema_extra=_COUNT
    )
    last_error: str | None = Field(description="The last failure; null if it never failed.")
    engine: EngineLoad | None = Field(
        description="vLLM's queue at the last reading; null when none is fresh (balanced on in-flight counts then)."
    )


class RouteStatus(BaseModel):
    """A route key and its replicas."""

    model_config = _OWN
    key: str = Field(description="The route key (`MODEL_ROUTE_<KEY>`).")
    policy: RoutingPolicy = Field(description="How it picks a replica (`ROUTING_POLICY`, `ROUTING_POLICY_<KEY>`).")
    replicas: list[ReplicaStatus] = Field(description="Its replicas, in configured order.")


@component
class RouteStatusList(BaseModel):
    """Every route, as seen by one worker process (each keeps its own view of replica health)."""

    model_config = _OWN
    worker: int = Field(description="The pid of the worker that answered.")
    routes: list[RouteStatus] = Field(description="The routes.")


# vLLM's answers, relayed unchanged


class _RelayedCompletion(BaseModel):
    model_config = _RELAYED
    id: str = optional(description="The completion's id.")
    object: str = optional(description="Its kind.")
    created: int = optional(description="Unix time.", json_schema_extra=_UNIX_TIME)
    model: str | None = Field(None, description=_ANSWERING_MODEL)
    choices: list[dict[str, Any]] = optional(description="The answers.")
    usage: dict[str, Any] | None = Field(None, description=_USAGE)


@component
class ChatCompletion(_RelayedCompletion):
    """vLLM's `chat.completion`, unchanged."""

    object: str = optional(description="`chat.completion`.")
    choices: list[dict[str, Any]] = optional(description="The answers: `message`, `finish_reason`, ...")


@component
class Completion(_RelayedCompletion):
    """vLLM's `text_completion`, unchanged."""

    object: str = optional(description="`text_completion`.")
    choices: list[dict[str, Any]] = optional(description="The answers: `text`, `finish_reason`, ...")


@component
class EmbeddingList(BaseModel):
    """vLLM's embeddings answer, unchanged (`embedding` is a list of floats, or base64 with
    `encoding_format: base64`)."""

    model_config = _RELAYED
    object: str = optional(description="`list`.")
    data: list[dict[str, Any]] = optional(description="One `{object, index, embedding}` per input.")
    model: str | None = Field(None, description=_ANSWERING_MODEL)
    usage: dict[str, Any] | None = Field(
        None, description="`prompt_tokens`, `total_tokens`; null when vLLM gives none."
    )


@component
class ServerSentEvent(BaseModel):
    """One event of a `text/event-stream` answer (comment lines such as `: keepalive` are not events).

    On the wire: `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[...]}`, a blank line,
    ..., `data: [DONE]`, a blank line."""

    model_config = _OWN
    data: str = Field(
        description="One of vLLM's chunks as JSON, unchanged, or `[DONE]` at the end; after `event: error`, the "
        "error envelope as JSON.",
        examples=['{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[]}'],
    )
    event: Literal["message", "error"] = optional(
        description="Absent (that is, `message`) for vLLM's chunks and `[DONE]`; `error` for a failure after the "
        "stream started.",
    )
    id: str = optional(description="The event's id (vLLM sends none).")
    retry: int = optional(description="A reconnection delay in ms (vLLM sends none).")


_EVENTS_DESCRIPTION = (
    "Server-sent events: vLLM's events, forwarded as they arrive; a `: keepalive` comment whenever nothing was "
    "sent for `SSE_HEARTBEAT_SECONDS`; always ending with `data: [DONE]`. A failure after the stream started "
    "comes in-band: `event: error` with the error envelope as data, then `data: [DONE]`. The schema describes "
    "one event."
)

HEALTH = json_response(Health, "Always 200 while the gateway runs.")
ROUTE_STATUS = json_response(RouteStatusList, "Routes and replicas.")
API_MODEL_LIST = json_response(ApiModelList, "The merged model list.")
OPENAI_MODEL_LIST = json_response(OpenAIModelList, "The merged model list, in OpenAI's format.")
METRICS_TEXT = Response(
    {
        "text/plain": {
            "type": "string",
            "example": 'gw_requests_total{method="POST",path="/api/chat",status="200"} 10.0',
        }
    },
    status=status(200),
    description="Prometheus text exposition format (`text/plain; version=0.0.4`).",
)
CHAT_COMPLETION = json_response(ChatCompletion, "vLLM's chat completion, unchanged.")
EMBEDDINGS = json_response(EmbeddingList, "vLLM's embeddings, unchanged.")
CHAT_STREAM = Response({SSE: ref(ServerSentEvent)}, status=status(200), description=_EVENTS_DESCRIPTION)
CHAT_COMPLETION_OR_STREAM = Response(
    {JSON: ref(ChatCompletion), SSE: ref(ServerSentEvent)},
    status=status(200),
    description=f"vLLM's chat completion as JSON; with `stream: true`: {_EVENTS_DESCRIPTION}",
)
COMPLETION_OR_STREAM = Response(
    {JSON: ref(Completion), SSE: ref(ServerSentEvent)},
    status=status(200),
    description=f"vLLM's completion as JSON; with `stream: true`: {_EVENTS_DESCRIPTION}",
)
