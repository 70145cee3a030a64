"""
Request bodies: one pydantic model per body, which both checks it and documents it (the component
schemas of `/docs/openapi.json`, through gateway/api/openapi/schema.py).

The checks (gateway/api/checking.py) are strict, take a JSON null as an absent field, and name
the first field at fault in a 400.

`/api` bodies are rebuilt for vLLM: `system` and `message` become `messages`, and the fields of
the gateway's own (`modelKey`, ...) are dropped; every other field goes upstream as it came.
`/v1/*` bodies are not rebuilt: they go upstream byte for byte, and only the fields routing needs
(`model`, `stream`) are read from them. vLLM checks the rest; what the models document of it
(`json_schema_extra`) is documentation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.api.checking import check, parse_object
from gateway.api.openapi.schema import component, doc_ref, optional
from gateway.errors import BadRequest

__all__ = [
    "ApiChat",
    "ApiChatRequest",
    "ApiEmbeddings",
    "ApiEmbeddingsRequest",
    "ChatMessage",
    "OpenAIBody",
    "OpenAIRouting",
    "parse_object",
]

# Fields of the gateway's own /api bodies that are not sent upstream as they are.
_API_ONLY_FIELDS = frozenset({"message", "system", "modelKey"})
# Other fields are allowed (and go upstream from the body itself): the check reads only its own.
_PASSES_ON: dict[str, Any] = {"additionalProperties": True}
_CHECKED = ConfigDict(strict=True, extra="ignore", json_schema_extra=_PASSES_ON)

_MODEL = "The model; default `DEFAULT_MODEL_NAME`. Also chooses the route when no `modelKey` is given."
_MODEL_KEY = "The route to use (`MODEL_ROUTE_<KEY>`); wins over the `X-Model-Key` header."
_V1_MODEL = "The model; chooses the route unless `X-Model-Key` is sent."
_USER = (
    "The end user (OpenAI's field, passed on to vLLM); with `ROUTING_POLICY=session`, the session's key unless "
    "`SESSION_HEADER` is sent."
)


def _texts(schema: dict[str, Any]) -> None:
    """A text, or a non-empty list (of texts or token ids): what vLLM takes as `input` or `prompt`."""
    schema.pop("anyOf", None)
    schema["oneOf"] = [{"type": "string"}, {"type": "array", "minItems": 1, "items": {}}]


@component
class ChatMessage(BaseModel):
    """One message of the conversation (OpenAI's format)."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(description="Who says it: `system`, `user`, `assistant`, `tool`, ...", examples=["user"])
    content: str | list[dict[str, Any]] | None = Field(None, description="Text, or a list of content parts.")


@component
class ApiChatRequest(BaseModel):
    """`system` and `message` become the `messages` list (a non-empty `messages` list may be sent instead of
    `message`). Other OpenAI sampling fields (`top_p`, `stop`, `seed`, ...) go to vLLM as they are, and vLLM
    checks them."""

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        json_schema_extra={
            **_PASSES_ON,
            "anyOf": [
                {"required": ["message"]},
                {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
            ],
        },
    )

    message: str = optional(min_length=1, description="The user's message (not empty).", examples=["Hello!"])
    # Checked as a list only: vLLM checks the messages themselves.
    messages: list[Any] | None = Field(
        None,
        min_length=1,
        description="The whole conversation, instead of `message`.",
        json_schema_extra={"items": doc_ref(ChatMessage)},
    )
    model: str | None = Field(None, description=_MODEL, examples=["Qwen/Qwen2.5-0.5B-Instruct"])
    modelKey: str | None = Field(None, description=_MODEL_KEY, examples=["tiny"])
    system: str | None = Field(None, description="A system prompt, sent before the message.")
    user: str | None = Field(None, description=_USER)
    temperature: float | None = Field(
        None,
        description="Sampling temperature (an integer is fine; vLLM refuses a negative one).",
        examples=[0.7],
        json_schema_extra={"minimum": 0},
    )
    max_tokens: int | None = Field(
        None,
        description="At most this many tokens in the answer (vLLM refuses fewer than 1, or more than the context).",
        examples=[256],
        json_schema_extra={"minimum": 1},
    )


@component
class ApiEmbeddingsRequest(BaseModel):
    """Other OpenAI embeddings fields (`encoding_format`, `dimensions`, ...) go to vLLM as they are."""

    model_config = _CHECKED

    input: str | list[Any] = Field(
        description="A text, or a list of texts (or of token-id lists).",
        examples=["The food was delicious."],
        json_schema_extra=_texts,
    )
    model: str | None = Field(None, description=_MODEL)
    modelKey: str | None = Field(None, description=_MODEL_KEY)
    user: str | None = Field(None, description=_USER)


class OpenAIRouting(BaseModel):
    """What the gateway reads of a `/v1` body: the fields that route it."""

    model_config = _CHECKED

    model: str | None = Field(None, description=_V1_MODEL)
    stream: bool | None = Field(None, description="`true`: the answer comes as `text/event-stream`.")
    user: str | None = Field(None, description=_USER)


@component
class OpenAIChatRequest(OpenAIRouting):
    """OpenAI's chat completions body; every other field goes to vLLM unchanged."""

    messages: list[ChatMessage] = Field(description="The conversation.")


@component
class OpenAICompletionRequest(OpenAIRouting):
    """OpenAI's (legacy) completions body; every other field goes to vLLM unchanged."""

    prompt: str | list[Any] = Field(
        description="The prompt: a text, texts, or token ids.", examples=["Once upon a time"], json_schema_extra=_texts
    )


@component
class OpenAIEmbeddingsRequest(BaseModel):
    """OpenAI's embeddings body; every other field goes to vLLM unchanged."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description=_V1_MODEL)
    user: str | None = Field(None, description=_USER)
    input: str | list[Any] = Field(description="A text, texts, or token ids.", json_schema_extra=_texts)


# ------------------------------------------------------------------------------------------------
# What the handlers get
# ------------------------------------------------------------------------------------------------


def _upstream_fields(data: dict[str, Any]) -> dict[str, Any]:
    # Extra OpenAI fields (top_p, seed, stop, ...) pass through to vLLM, which validates them.
    return {key: value for key, value in data.items() if key not in _API_ONLY_FIELDS}


@dataclass(frozen=True, slots=True)
class ApiChat:
    """`POST /api/chat` and `/api/chat/stream`, checked and rebuilt for vLLM."""

    model: str | None
    model_key: str | None
    upstream_body: dict[str, Any]
    user: str | None = None

    @classmethod
    def parse(cls, body: bytes, model_key_header: str | None, *, stream: bool) -> ApiChat:
        data = parse_object(body)
        chat = check(ApiChatRequest, data)
        if chat.message is not None:
            messages: list[Any] = [{"role": "user", "content": chat.message}]
        elif chat.messages is not None:
            messages = chat.messages
        else:
            raise BadRequest("field 'message' is required", code="missing_field", param="message")
        if chat.system:
            messages = [{"role": "system", "content": chat.system}, *messages]
        fields = _upstream_fields(data)
        fields["messages"] = messages
        if chat.model is not None:
            fields["model"] = chat.model
        fields["stream"] = stream
        model_key = chat.modelKey or model_key_header or None
        return cls(model=chat.model, model_key=model_key, upstream_body=fields, user=chat.user)


@dataclass(frozen=True, slots=True)
class ApiEmbeddings:
    """`POST /api/embeddings`, checked; the body goes upstream without the gateway's own fields."""

    model: str | None
    model_key: str | None
    upstream_body: dict[str, Any]
    user: str | None = None

    @classmethod
    def parse(cls, body: bytes, model_key_header: str | None) -> ApiEmbeddings:
        data = parse_object(body)
        embeddings = check(ApiEmbeddingsRequest, data)
        model_key = embeddings.modelKey or model_key_header or None
        return cls(
            model=embeddings.model, model_key=model_key, upstream_body=_upstream_fields(data), user=embeddings.user
        )


@dataclass(frozen=True, slots=True)
class OpenAIBody:
    """A `/v1/*` body: what routing reads from it; the bytes themselves go upstream unchanged."""

    model: str | None
    stream: bool
    user: str | None = None

    @classmethod
    def parse(cls, body: bytes) -> OpenAIBody:
        data = parse_object(body)
        model, stream, user = data.get("model"), data.get("stream"), data.get("user")
        # The hot path: the common case is told apart inline; anything else goes to the model's
        # own check, which says what is wrong (test_payloads holds the two to the same answers).
        if (
            (model is None or type(model) is str)
            and (stream is None or type(stream) is bool)
            and (user is None or type(user) is str)
        ):
            return cls(model=model, stream=bool(stream), user=user)
        routing = check(OpenAIRouting, data)
        return cls(model=routing.model, stream=bool(routing.stream), user=routing.user)
