"""
A small, fast fake of vLLM's OpenAI-compatible server, for tests, benchmarks and development without a GPU.

    python scripts/fake_vllm.py --port 8001 [--host 127.0.0.1] [--model tiny-llama] [--model another]
        [--embedding-dim 384] [--chunks 8] [--chunk-interval 0.0] [--headers-delay 0.0] [--latency 0.0] [--quiet]

When ready it prints `fake-vllm listening on http://HOST:PORT/v1 models=[...]` on stdout (`--port 0` picks a
free port). SIGTERM and SIGINT exit with status 0. Without `--quiet`, each response is logged on stderr.

Endpoints: GET /v1/models, /health, /version; POST /v1/chat/completions, /v1/completions, /v1/embeddings.
Bodies, SSE framing, headers and errors copy vLLM 0.32.0 as captured in real-vllm-cpu.md. The text is
"tok0 tok1 ...", one token per SSE content event: `chunks` tokens ending with "stop", or `max_tokens` tokens
ending with "length" when max_tokens <= chunks. Token counts are word counts. Embeddings are unit vectors
derived from the text.

Test knobs, global until reset; a request body's `"fake": {...}` applies them to that request alone:
    POST /_fake/config {...}  merge into the running config (GET shows it)
    POST /_fake/reset         restore the command-line config and zero the stats
    GET  /_fake/stats         requests (path -> count), open_connections, connections (those that carried API requests), aborted, last_abort_at, dropped,
                              request_ids (last 200 X-Request-Id), last_headers (last POST), completed
The knobs are the fields of `Knobs` below. Requests to /_fake/* are left out of the stats.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import functools
import http
import json
import os
import random
import signal
import sys
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

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


@functools.cache
def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. Its task answers the requests in order, so that sleeps block nobody else."""

    def __init__(self, app: FakeVLLM) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.pending: collections.deque[Request] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a response is under way: losing the connection now is an abort
        self.dropped = self.closing = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.log_line = ""
        self.served_api = False  # counted in stats.connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.connections.add(self)
        self.app.stats.open_connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(status_line(400) + b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        stats = self.app.stats
        self.app.connections.discard(self)
        stats.open_connections -= 1
        if self.busy:
            self.busy = False
            stats.aborted, stats.last_abort_at = stats.aborted + 1, time.time()
        if self.task is not None:  # stop working at once, as vLLM aborts a request whose client left
            self.task.cancel()

    def pause_writing(self) -> None:
        self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self.drain_waiter = None

    async def drain(self) -> None:
        if self.drain_waiter is not None:  # the client reads slowly: wait, rather than buffer without bound
            await self.drain_waiter

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method().decode("latin-1")
        self.pending.append(Request(method, path, self.headers, b"".join(self.body), self.parser.should_keep_alive()))
        self.url, self.headers, self.body = b"", {}, []
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.serve())

    async def serve(self) -> None:
        while self.pending and not self.transport.is_closing():
            request = self.pending.popleft()
            self.busy, self.dropped, self.closing = True, False, not request.keep_alive
            self.log_line = f'"{request.method} {request.path}"'
            await self.app.dispatch(self, request)
            self.busy = False
            if self.closing:
                self.transport.close()
        self.task = None

    def head(self, status: int, content_type: bytes | None, length: int | None, extra: bytes = b"") -> bytes:
        """A response head with uvicorn's headers, in its order. No length means a chunked body."""
        parts = [status_line(status), b"date: ", self.app.date(), b"\r\nserver: uvicorn\r\n", extra]
        if length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        if content_type is not None:
            parts.append(b"content-type: %b\r\n" % content_type)
        parts.append(b"vary: Origin\r\n" if length is not None else b"vary: Origin\r\ntransfer-encoding: chunked\r\n")
        parts.append(b"connection: close\r\n\r\n" if self.closing else b"\r\n")
        if not self.app.quiet:
            print(self.log_line, status, file=sys.stderr)
        return b"".join(parts)

    def send(self, status: int, body: bytes, extra: bytes = b"") -> None:
        self.transport.write(self.head(status, JSON, len(body), extra) + body)

    def send_event(self, data: bytes) -> None:
        """One SSE event in its own HTTP chunk, as vLLM sends them."""
        event = b"data: %b\n\n" % data
        self.transport.write(b"%x\r\n%b\r\n" % (len(event), event))

    def drop(self) -> None:
        """Reset the connection on purpose: counted as dropped, not as a client abort."""
        self.busy, self.dropped = False, True
        self.app.stats.dropped += 1
        self.transport.abort()


Handler = Callable[[Connection, Request], Awaitable[None]]


class FakeVLLM:
    def __init__(self, knobs: Knobs, quiet: bool) -> None:
        self.initial = self.knobs = knobs
        self.quiet = quiet
        self.stats = Stats()
        self.connections: set[Connection] = set()
        self._date, self._date_second = b"", -1
        self.routes: dict[str, dict[str, Handler]] = {
            "/v1/models": {"GET": self.models},
            "/health": {"GET": self.health},
            "/version": {"GET": self.version},
            "/v1/chat/completions": {"POST": self.chat_completions},
            "/v1/completions": {"POST": self.completions},
            "/v1/embeddings": {"POST": self.embeddings},
            "/_fake/config": {"GET": self.config, "POST": self.config},
            "/_fake/reset": {"POST": self.reset},
            "/_fake/stats": {"GET": self.get_stats},
        }

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:  # formatting the date costs more than the rest of the head
            self._date, self._date_second = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode(), now
        return self._date

    async def dispatch(self, conn: Connection, request: Request) -> None:
        internal = request.path.startswith("/_fake/")
        if not internal:
            if not conn.served_api:
                conn.served_api = True
                self.stats.connections += 1
            self.stats.requests[request.path] += 1
            if "x-request-id" in request.headers:
                self.stats.request_ids.append(request.headers["x-request-id"])
            if request.method == "POST":
                self.stats.last_headers = request.headers
        try:
            methods = self.routes.get(request.path)
            if methods is None:
                raise HTTPError(404, body=b'{"detail":"Not Found"}')
            if request.method not in methods:
                allow = b"allow: %b\r\n" % ", ".join(methods).encode()
                raise HTTPError(405, body=b'{"detail":"Method Not Allowed"}', extra=allow)
            await methods[request.method](conn, request)
        except HTTPError as exc:
            conn.send(exc.status, exc.body, exc.extra)
        except Exception:  # noqa: BLE001 - a bug in the fake: answer like a crashed server, keep serving
            traceback.print_exc()
            conn.send(500, HTTPError(500, "fake-vllm internal error").body)
        if not internal and not conn.dropped:
            self.stats.completed += 1

    # -- the vLLM API
    async def models(self, conn: Connection, request: Request) -> None:
        knobs, created = self.knobs, int(time.time())
        if knobs.models_delay:
            await asyncio.sleep(knobs.models_delay)
        if knobs.models_status:
            raise HTTPError(knobs.models_status, f"fake-vllm: injected status {knobs.models_status}")
        permission = {"id": f"modelperm-{os.urandom(8).hex()}", "object": "model_permission", "created": created,
                      "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                      "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                      "organization": "*", "group": None, "is_blocking": False}  # fmt: skip
        data = [{"id": model, "object": "model", "created": created, "owned_by": "vllm", "root": model, "parent": None,
                 "max_model_len": MAX_MODEL_LEN, "permission": [permission]} for model in knobs.models]  # fmt: skip
        conn.send(200, dumps({"object": "list", "data": data}))

    async def health(self, conn: Connection, request: Request) -> None:
        conn.transport.write(conn.head(200, None, 0))

    async def version(self, conn: Connection, request: Request) -> None:
        conn.send(200, b'{"version":"0.0.0-fake"}')

    async def chat_completions(self, conn: Connection, request: Request) -> None:
        knobs, body = await self.prelude(request)
        messages = require(body, "messages", list, "list_type", "Input should be a valid list")
        model = self.model(body, knobs, "model", aliases=True)
        count, finish = completion_length(body, knobs, "max_completion_tokens", "max_tokens")
        prompt_tokens = sum(count_words(m.get("content")) for m in messages if isinstance(m, dict)) or 1
        head = {"id": request_id(request, "chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": model}  # fmt: skip
        if body.get("stream"):
            head["object"] = "chat.completion.chunk"
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

            def choice(piece: str, reason: str | None) -> dict[str, Any]:
                return {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": reason,
                        **({"stop_reason": None} if reason else {}), "token_ids": None}  # fmt: skip

            return await self.stream(conn, knobs, body, head, role, choice, count, finish, prompt_tokens)
        message = {"role": "assistant", "content": "".join(PIECES[:count]), "refusal": None, "annotations": None,
                   "audio": None, "function_call": None, "reasoning": None}  # fmt: skip
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None,
                  "token_ids": None, "routed_experts": None}  # fmt: skip
        reply = {**head, "choices": [choice], "service_tier": None, "system_fingerprint": FINGERPRINT,
                 "usage": usage(prompt_tokens, count, True), "prompt_logprobs": None, "prompt_token_ids": None,
                 "prompt_text": None, "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}  # fmt: skip
        await self.respond(conn, knobs, reply)

    async def completions(self, conn: Connection, request: Request) -> None:
        knobs, body = await self.prelude(request)
        prompt = require(body, "prompt", (str, list), "string_type", "Input should be a valid string")
        model = self.model(body, knobs, "model", aliases=True)
        count, finish = completion_length(body, knobs, "max_tokens")
        prompt_tokens = count_words(prompt) or 1
        head = {"id": request_id(request, "cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": model}  # fmt: skip
        if body.get("stream"):

            def choice(piece: str, reason: str | None) -> dict[str, Any]:
                return {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason, "stop_reason": None,
                        "prompt_token_ids": None, "token_ids": None}  # fmt: skip

            return await self.stream(conn, knobs, body, head, None, choice, count, finish, prompt_tokens)
        # Not captured from vLLM: this follows the field order of its CompletionResponse model.
        choice = {"index": 0, "text": "".join(PIECES[:count]), "logprobs": None, "finish_reason": finish,
                  "stop_reason": None, "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None}  # fmt: skip
        reply = {**head, "choices": [choice], "service_tier": None, "system_fingerprint": FINGERPRINT,
                 "usage": usage(prompt_tokens, count, True), "kv_transfer_params": None}  # fmt: skip
        await self.respond(conn, knobs, reply)

    async def embeddings(self, conn: Connection, request: Request) -> None:
        knobs, body = await self.prelude(request)
        raw = require(body, "input", (str, list), "string_type", "Input should be a valid string")
        model = self.model(body, knobs, None, aliases=False)  # vLLM's embedding server gives no aliases, param null
        if body.get("dimensions") is not None:
            raise HTTPError.bad_request(f"Model '{model}' does not support Matryoshka embeddings; dimensions must "
                                        f"be unset (received dimensions={body['dimensions']}).")  # fmt: skip
        # A string, a list of strings, a list of token ids, or a list of lists of token ids.
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
        if not inputs:
            raise HTTPError.bad_request("You must pass at least one prompt")
        data = []
        for index, text in enumerate(inputs):
            floats, encoded = embed(str(text), knobs.embedding_dim)
            vector = encoded if body.get("encoding_format") == "base64" else floats
            data.append({"index": index, "object": "embedding", "embedding": vector})
        tokens = sum(len(t) if isinstance(t, list) else count_words(t) + 2 for t in inputs)  # + [CLS] and [SEP]
        reply = {"id": request_id(request, "embd"), "object": "list", "created": int(time.time()), "model": model,
                 "data": data, "usage": usage(tokens, 0, True)}  # fmt: skip
        await self.respond(conn, knobs, reply)

    # -- steps shared by the API handlers
    async def prelude(self, request: Request) -> tuple[Knobs, dict[str, Any]]:
        """Parse the body and apply its `fake` overrides, wait `headers_delay`, then inject `status`."""
        knobs, body, error = self.knobs, None, None
        try:
            body = parse_body(request)
            if "fake" in body:
                knobs = knobs.merged(body.pop("fake"))
        except HTTPError as exc:
            error = exc
        if knobs.headers_delay:
            await asyncio.sleep(knobs.headers_delay)
        if knobs.status:
            raise HTTPError(knobs.status, f"fake-vllm: injected status {knobs.status}")
        if error is not None:
            raise error
        return knobs, body  # type: ignore[return-value]

    def model(self, body: dict[str, Any], knobs: Knobs, param: str | None, aliases: bool) -> str:
        model = body.get("model")
        if model is None:
            return knobs.models[0]
        if model not in knobs.models:
            valid = f" Valid aliases: {', '.join(knobs.models)}." if aliases else ""
            raise HTTPError(404, f"The model `{model}` does not exist.{valid}", "NotFoundError", param)
        return str(model)

    async def respond(self, conn: Connection, knobs: Knobs, reply: dict[str, Any]) -> None:
        body = dumps(reply)
        if not knobs.latency and knobs.drop_after is None:
            return conn.send(200, body)
        conn.transport.write(conn.head(200, JSON, len(body)))
        if knobs.drop_after is not None:
            return conn.drop()
        await asyncio.sleep(knobs.latency)
        conn.transport.write(body)

    async def stream(self, conn: Connection, knobs: Knobs, body: dict[str, Any], head: dict[str, Any],
                     role: dict[str, Any] | None, choice: Callable[[str, str | None], dict[str, Any]], tokens: int,
                     finish: str, prompt_tokens: int) -> None:  # fmt: skip
        """Send [the role chunk,] the content chunks (the last with finish_reason), [usage,] then [DONE].

        Each event is serialised as it goes out: a burst of new streams must not make the fake the
        bottleneck of a benchmark.
        """
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def payload(sent: int) -> bytes:
            if sent < tokens:
                last = sent == tokens - 1
                item = {**head, "choices": [choice(PIECES[sent], finish if last else None)]}
                if last and not include_usage:  # the finish chunk carries the fingerprint instead
                    item["system_fingerprint"] = FINGERPRINT
                return dumps(item)
            if sent == tokens and include_usage:
                return dumps({**head, "choices": [], "usage": usage(prompt_tokens, tokens),
                              "system_fingerprint": FINGERPRINT})  # fmt: skip
            return b"[DONE]"

        conn.transport.write(conn.head(200, SSE, None))
        if role is not None:
            conn.send_event(dumps({**head, "choices": [role], "prompt_token_ids": None, "prompt_text": None}))
        for sent in range(tokens + include_usage + 1):  # `sent` content events have gone out so far
            if sent == knobs.drop_after and sent <= tokens:
                return conn.drop()
            if sent == knobs.stall_after and sent <= tokens:
                await asyncio.sleep(knobs.stall_seconds)
            if knobs.chunk_interval and sent < tokens and (sent or role is not None):
                await asyncio.sleep(knobs.chunk_interval)
            conn.send_event(payload(sent))
            await conn.drain()
        if knobs.end_delay:
            await asyncio.sleep(knobs.end_delay)
        conn.transport.write(b"0\r\n\r\n")

    # -- test controls
    async def config(self, conn: Connection, request: Request) -> None:
        if request.method == "POST":
            self.knobs = self.knobs.merged(parse_body(request))
        conn.send(200, dumps(dataclasses.asdict(self.knobs)))

    async def reset(self, conn: Connection, request: Request) -> None:
        self.knobs, self.stats = self.initial, Stats(open_connections=self.stats.open_connections)
        conn.send(200, dumps(dataclasses.asdict(self.knobs)))

    async def get_stats(self, conn: Connection, request: Request) -> None:
        conn.send(200, dumps(self.stats.as_json()))


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A fake vLLM OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--model", action="append", dest="models", help="a served model id; repeatable")
    parser.add_argument("--embedding-dim", type=int, default=384)
    parser.add_argument("--chunks", type=int, default=8, help="content events (tokens) per completion")
    parser.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between SSE content events")
    parser.add_argument("--headers-delay", type=float, default=0.0, help="seconds before the headers of a POST")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before a non-streaming body")
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    options = {k: v for k, v in vars(args).items() if k in Knobs.__dataclass_fields__ and v is not None}
    try:
        knobs = Knobs().merged(options)
    except HTTPError as exc:
        raise SystemExit(f"fake-vllm: {loads(exc.body)['error']['message']}") from None
    app = FakeVLLM(knobs, quiet=args.quiet)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(app), args.host, args.port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = server.sockets[0].getsockname()[1]
    models = dumps(list(knobs.models)).decode()
    print(f"fake-vllm listening on http://{args.host}:{port}/v1 models={models}", flush=True)
    await stop.wait()
    server.close()
    for conn in list(app.connections):
        conn.transport.abort()


def main() -> None:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
