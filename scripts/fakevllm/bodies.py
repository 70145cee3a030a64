"""Reading request bodies and building answers: lengths, ids, usage, embeddings."""

from __future__ import annotations

import base64
import functools
import json
import os
import random
import sys
from array import array
from typing import Any

from fakevllm.common import MAX_MODEL_LEN, HTTPError, Knobs, loads
from fakevllm.wire import Request


def parse_body(request: Request) -> dict[str, Any]:
    """Decode a JSON object body, or raise the 400 "Bad Request" that vLLM sends."""
    if "application/json" not in request.headers.get("content-type", ""):
        message = "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed"
        raise HTTPError(400, message, "Bad Request")
    if not request.body:
        raise HTTPError.invalid("missing", "body", "Field required", "None")
    try:
        body = loads(request.body)
    except ValueError:
        try:  # the standard library's parser words its errors as vLLM reports them
            json.loads(request.body)
            reason, position = "Invalid JSON", 0  # orjson is stricter: lone surrogates, NaN...
        except ValueError as exc:
            reason, position = getattr(exc, "msg", str(exc)), getattr(exc, "pos", 0)
        loc = f"body.{position}"
        raise HTTPError.invalid("json_invalid", loc, "JSON decode error", "<dict of 0 items>", error=reason) from None
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise HTTPError.invalid("model_attributes_type", "body", msg, body)
    return body


def require(body: dict[str, Any], field: str, types: type | tuple[type, ...], kind: str, msg: str) -> Any:
    if field not in body:
        raise HTTPError.invalid("missing", f"body.{field}", "Field required", f"<dict of {len(body)} items>")
    if not isinstance(body[field], types):
        raise HTTPError.invalid(kind, f"body.{field}", msg, body[field])
    return body[field]


def completion_length(body: dict[str, Any], knobs: Knobs, *fields: str) -> tuple[int, str]:
    """How many tokens to send, and the finish_reason. max_tokens is checked as vLLM does."""
    field = next((f for f in fields if body.get(f) is not None), None)
    if field is None:
        return knobs.chunks, "stop"
    value = body[field]
    if not isinstance(value, int) or isinstance(value, bool):
        raise HTTPError.invalid("int_type", f"body.{field}", "Input should be a valid integer", value)
    where = f"(parameter={field}, value={value})"
    if value < 1:
        raise HTTPError.bad_request(f"{field} must be at least 1, got {value}. {where}", field)
    if value > MAX_MODEL_LEN:
        message = f"{field}={value} cannot be greater than max_model_len={MAX_MODEL_LEN}."
        raise HTTPError.bad_request(f"{message} Please request fewer output tokens. {where}", field)
    return (value, "length") if value <= knobs.chunks else (knobs.chunks, "stop")


def request_id(request: Request, prefix: str) -> str:
    """`<prefix>-<X-Request-Id>` as vLLM does, else `<prefix>-<16 hex>`."""
    return f"{prefix}-{request.headers.get('x-request-id') or os.urandom(8).hex()}"


def count_words(content: Any) -> int:
    """A stand-in for tokenisation: whitespace-separated words, in strings and in text parts."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(count_words(part.get("text") if isinstance(part, dict) else part) for part in content)
    return 0


def usage(prompt: int, completion: int, details: bool = False) -> dict[str, Any]:
    counts: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    counts["completion_tokens"] = completion
    if details:
        counts.update(prompt_tokens_details=None, completion_tokens_details=None)
    return counts


@functools.lru_cache(maxsize=4096)
def embed(text: str, dim: int) -> tuple[list[float], str]:
    """A unit vector derived from `text`: its float32 values, and base64 of them as little-endian bytes."""
    rng = random.Random(text)  # seeding with a str hashes it with SHA-512: stable across processes
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    floats = array("f", [v / norm for v in vector])
    values = floats.tolist()
    if sys.byteorder == "big":
        floats.byteswap()
    return values, base64.b64encode(floats.tobytes()).decode()
