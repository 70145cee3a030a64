"""Knobs, test knobs and their checks, the stats, and the errors the fake answers with."""

from __future__ import annotations

import collections
import dataclasses
import http
import json
from collections.abc import Callable
from typing import Any

try:
    import orjson

    dumps: Callable[[Any], bytes] = orjson.dumps
    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # orjson comes with the gateway, but the fake also works without it

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    loads = json.loads

MAX_MODEL_LEN = 2048
FINGERPRINT = "vllm-0.32.0-6aa7d031"
PIECES = ["tok0"] + [f" tok{i}" for i in range(1, MAX_MODEL_LEN)]
JSON, SSE = b"application/json", b"text/event-stream; charset=utf-8"


@dataclasses.dataclass(frozen=True)
class Knobs:
    """How the fake behaves. Times are in seconds; None switches a knob off."""

    models: tuple[str, ...] = ("tiny-llama",)
    embedding_dim: int = 384
    chunks: int = 8  # content events (tokens) per completion, unless max_tokens is smaller
    chunk_interval: float = 0.0  # before each content event, except at the very start of a stream
    headers_delay: float = 0.0  # before the response headers of every API POST
    latency: float = 0.0  # between the headers and the body of a non-streaming 200
    stall_after: int | None = None  # after this many content events, sleep stall_seconds once
    stall_seconds: float = 0.0
    end_delay: float = 0.0  # between a stream's [DONE] event and the end of its chunked body
    drop_after: int | None = None  # after this many content events, reset the connection (a
    # non-streaming 200 is reset right after its headers)
    status: int | None = None  # answer every API POST with this status and a vLLM error body
    models_delay: float = 0.0
    models_status: int | None = None  # answer GET /v1/models with this status
    waiting: int = 0  # vllm:num_requests_waiting in /metrics (running is the requests under way)
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc in /metrics
    metrics_status: int | None = None  # answer GET /metrics with this status
    prefix_cache_blocks: int = 4096  # blocks of 16 tokens (4 bytes each) in the LRU prefix cache; 0: none
    prefill_seconds_per_token: float = 0.0  # prefill time per uncached prompt token, one request at a time
    prefill_base_seconds: float = 0.0  # prefill time per request on top; both 0: no prefill time, no turns

    def merged(self, overrides: Any) -> Knobs:
        if not isinstance(overrides, dict):
            raise HTTPError.bad_request("fake config must be a JSON object")
        return dataclasses.replace(self, **{key: check_knob(key, value) for key, value in overrides.items()})


def check_knob(key: str, value: Any) -> Any:
    """Validate one knob, so that a typo in a test fails loudly instead of being ignored."""
    fields = Knobs.__dataclass_fields__
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key not in fields:
        raise HTTPError.bad_request(f"unknown fake knob {key!r}; knobs: {', '.join(fields)}")
    if key == "models" and isinstance(value, list) and value and all(isinstance(m, str) for m in value):
        return tuple(value)
    if isinstance(fields[key].default, float) and (is_int or isinstance(value, float)) and value >= 0:
        return float(value)
    if key.endswith("status") and (value is None or is_int and (value == 0 or 100 <= value <= 599)):
        return value or None  # 0 switches it off too
    if key.endswith("_after") and (value is None or is_int and value >= 0):
        return value
    if key in ("waiting", "prefix_cache_blocks") and is_int and value >= 0:
        return value
    if key in ("chunks", "embedding_dim") and is_int and 1 <= value <= (MAX_MODEL_LEN if key == "chunks" else 65536):
        return value
    raise HTTPError.bad_request(f"invalid value for fake knob {key}: {value!r}")


@dataclasses.dataclass
class Stats:
    requests: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    open_connections: int = 0
    connections: int = 0  # connections that carried an API request (not /_fake/*)
    aborted: int = 0  # the client closed its connection before the response was complete
    last_abort_at: float | None = None
    dropped: int = 0  # connections reset on purpose (drop_after)
    request_ids: collections.deque[str] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=200))
    last_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    completed: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of them, those found cached

    def as_json(self) -> dict[str, Any]:
        return {**vars(self), "requests": dict(self.requests), "request_ids": list(self.request_ids)}


class HTTPError(Exception):
    """An error response: vLLM's `{"error": {...}}` body, unless `body` is given."""

    def __init__(self, status: int, message: str = "", kind: str = "", param: str | None = None,
                 body: bytes | None = None, extra: bytes = b"") -> None:  # fmt: skip
        if body is None:
            if not kind:  # vLLM names it after the exception class: 503 -> ServiceUnavailableError
                kind = http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "").removesuffix("Error") + "Error"
            body = dumps({"error": {"message": message, "type": kind, "param": param, "code": status}})
        self.status, self.body, self.extra = status, body, extra

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> HTTPError:
        return cls(400, message, "BadRequestError", param)

    @classmethod
    def invalid(cls, kind: str, loc: str, msg: str, value: Any, **ctx: Any) -> HTTPError:
        """A request-schema error: vLLM answers 400 "Bad Request" (sic) with a dump of pydantic's error."""
        error = {"type": kind, "loc": loc, "msg": msg, "input": value, **({"ctx": ctx} if ctx else {})}
        return cls(400, f"1 validation error:\n  {error!r}", "Bad Request", loc)
