"""
Request bodies: parsing, type checks with messages that name the field, and the upstream body
built from the gateway's own `/api` shapes.

`/v1/*` bodies are not rebuilt: they go upstream byte for byte, and only the fields routing
needs (`model`, `stream`) are read from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import BadRequest

__all__ = ["ApiChat", "ApiEmbeddings", "OpenAIBody", "parse_object"]

# Fields of the gateway's own /api bodies that are not sent upstream as they are.
_API_ONLY_FIELDS = frozenset({"message", "system", "modelKey"})


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not body:
        raise BadRequest("request body is empty: expected a JSON object", code="invalid_json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses nesting deeper than 1024 levels here, instead of recursing.
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {_json_type(value)}", code="invalid_json")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid(field: str, expected: str, value: Any) -> BadRequest:
    return BadRequest(f"field '{field}' must be {expected}, not {_json_type(value)}", code="invalid_field", param=field)


def optional_str(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(field, "a string", value)
    return value


def _optional_number(data: dict[str, Any], field: str) -> None:
    value = data.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _invalid(field, "a number", value)


def _optional_int(data: dict[str, Any], field: str) -> None:
    value = data.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _invalid(field, "an integer", value)


def _optional_bool(data: dict[str, Any], field: str) -> bool:
    value = data.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(field, "a boolean", value)
    return value


def _routing_key(data: dict[str, Any], header: str | None) -> str | None:
    """`modelKey` from the body, else the `X-Model-Key` header."""
    return optional_str(data, "modelKey") or header or None


def _upstream_fields(data: dict[str, Any]) -> dict[str, Any]:
    # Extra OpenAI fields (top_p, seed, stop, ...) pass through to vLLM, which validates them.
    return {key: value for key, value in data.items() if key not in _API_ONLY_FIELDS}


def _chat_messages(data: dict[str, Any]) -> list[Any]:
    """`message` as the user's turn; a `messages` array is accepted instead of it."""
    message = data.get("message")
    if message is None and data.get("messages") is not None:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise _invalid("messages", "a non-empty array", messages)
        return messages
    if message is None:
        raise BadRequest("field 'message' is required", code="missing_field", param="message")
    if not isinstance(message, str):
        raise _invalid("message", "a non-empty string", message)
    if not message:
        raise BadRequest(
            "field 'message' must be a non-empty string, not an empty one", code="invalid_field", param="message"
        )
    return [{"role": "user", "content": message}]


@dataclass(frozen=True, slots=True)
class ApiChat:
    """`POST /api/chat` and `/api/chat/stream`: `{message, model?, modelKey?, system?, ...}`."""

    model: str | None
    model_key: str | None
    upstream_body: dict[str, Any]

    @classmethod
    def parse(cls, body: bytes, model_key_header: str | None, *, stream: bool) -> ApiChat:
        data = parse_object(body)
        model = optional_str(data, "model")
        model_key = _routing_key(data, model_key_header)
        system = optional_str(data, "system")
        messages = _chat_messages(data)
        if system:
            messages = [{"role": "system", "content": system}, *messages]
        _optional_number(data, "temperature")
        _optional_int(data, "max_tokens")
        fields = _upstream_fields(data)
        fields["messages"] = messages
        if model is not None:
            fields["model"] = model
        fields["stream"] = stream
        return cls(model=model, model_key=model_key, upstream_body=fields)


@dataclass(frozen=True, slots=True)
class ApiEmbeddings:
    """`POST /api/embeddings`: `{input, model?, modelKey?}`."""

    model: str | None
    model_key: str | None
    upstream_body: dict[str, Any]

    @classmethod
    def parse(cls, body: bytes, model_key_header: str | None) -> ApiEmbeddings:
        data = parse_object(body)
        model = optional_str(data, "model")
        model_key = _routing_key(data, model_key_header)
        value = data.get("input")
        if value is None:
            raise BadRequest("field 'input' is required", code="missing_field", param="input")
        if not isinstance(value, (str, list)):
            raise _invalid("input", "a string or an array", value)
        return cls(model=model, model_key=model_key, upstream_body=_upstream_fields(data))


@dataclass(frozen=True, slots=True)
class OpenAIBody:
    """A `/v1/*` body: what routing reads from it; the bytes themselves go upstream unchanged."""

    model: str | None
    stream: bool

    @classmethod
    def parse(cls, body: bytes) -> OpenAIBody:
        data = parse_object(body)
        return cls(model=optional_str(data, "model"), stream=_optional_bool(data, "stream"))
