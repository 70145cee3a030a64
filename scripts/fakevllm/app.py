"""The fake's endpoints: what vLLM 0.32.0 answers, shaped by the knobs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from fakevllm.bodies import completion_length, count_words, embed, parse_body, request_id, require, usage
from fakevllm.common import FINGERPRINT, JSON, MAX_MODEL_LEN, PIECES, SSE, HTTPError, Knobs, Stats, dumps
from fakevllm.prefix_cache import PrefixCache, chat_prompt, completion_prompt, wanted
from fakevllm.wire import Connection, Request

Handler = Callable[[Connection, Request], Awaitable[None]]


class FakeVLLM:
    def __init__(self, knobs: Knobs, quiet: bool) -> None:
        self.initial = self.knobs = knobs
        self.quiet = quiet
        self.stats = Stats()
        self.connections: set[Connection] = set()
        self._date, self._date_second = b"", -1
        self.running = 0  # API POSTs under way: vllm:num_requests_running, less those waiting for prefill
        self.cache = PrefixCache()
        self.routes: dict[str, dict[str, Handler]] = {
            "/v1/models": {"GET": self.models},
            "/health": {"GET": self.health},
            "/version": {"GET": self.version},
            "/metrics": {"GET": self.metrics},
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
        scrape = request.path == "/metrics"  # counted by path only: not API traffic
        if not internal:
            self.stats.requests[request.path] += 1
        if not internal and not scrape:
            if not conn.served_api:
                conn.served_api = True
                self.stats.connections += 1
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
            running = request.method == "POST" and not internal
            self.running += running
            try:
                await methods[request.method](conn, request)
            finally:
                self.running -= running
        except HTTPError as exc:
            conn.send(exc.status, exc.body, exc.extra)
        except Exception:  # noqa: BLE001 - a bug in the fake: answer like a crashed server, keep serving
            traceback.print_exc()
            conn.send(500, HTTPError(500, "fake-vllm internal error").body)
        if not internal and not scrape and not conn.dropped:
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

    async def metrics(self, conn: Connection, request: Request) -> None:
        """The load gauges and prefix cache counters of vLLM's own /metrics, by its names (vLLM 0.32.0)."""
        knobs, queued = self.knobs, self.cache.waiting
        if knobs.metrics_status:
            raise HTTPError(knobs.metrics_status, f"fake-vllm: injected status {knobs.metrics_status}")
        labels = f'{{engine="0",model_name="{knobs.models[0]}"}}'
        gauges = (
            ("num_requests_running", "Number of requests in model execution batches.", self.running - queued, "gauge"),
            ("num_requests_waiting", "Number of requests waiting to be processed.", knobs.waiting + queued, "gauge"),
            ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", knobs.kv_cache_usage, "gauge"),
            ("prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens.",
             self.stats.prefix_cache_queries, "counter"),
            ("prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
             self.stats.prefix_cache_hits, "counter"),
        )  # fmt: skip
        text = "".join(
            f"# HELP vllm:{name} {doc}\n# TYPE vllm:{name} {kind}\nvllm:{name}{labels} {float(value)!r}\n"
            for name, doc, value, kind in gauges
        )
        conn.send(200, text.encode(), content_type=b"text/plain; version=0.0.4; charset=utf-8")

    async def version(self, conn: Connection, request: Request) -> None:
        conn.send(200, b'{"version":"0.0.0-fake"}')

    async def chat_completions(self, conn: Connection, request: Request) -> None:
        knobs, body = await self.prelude(request)
        messages = require(body, "messages", list, "list_type", "Input should be a valid list")
        model = self.model(body, knobs, "model", aliases=True)
        count, finish = completion_length(body, knobs, "max_completion_tokens", "max_tokens")
        prompt_tokens = sum(count_words(m.get("content")) for m in messages if isinstance(m, dict)) or 1
        prompt = chat_prompt(messages) if wanted(knobs) else ""
        head = {"id": request_id(request, "chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": model}  # fmt: skip
        if body.get("stream"):
            head["object"] = "chat.completion.chunk"
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

            def choice(piece: str, reason: str | None) -> dict[str, Any]:
                return {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": reason,
                        **({"stop_reason": None} if reason else {}), "token_ids": None}  # fmt: skip

            return await self.stream(conn, knobs, body, head, role, choice, count, finish, prompt_tokens, prompt)
        message = {"role": "assistant", "content": "".join(PIECES[:count]), "refusal": None, "annotations": None,
                   "audio": None, "function_call": None, "reasoning": None}  # fmt: skip
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None,
                  "token_ids": None, "routed_experts": None}  # fmt: skip
        reply = {**head, "choices": [choice], "service_tier": None, "system_fingerprint": FINGERPRINT,
                 "usage": usage(prompt_tokens, count, True), "prompt_logprobs": None, "prompt_token_ids": None,
                 "prompt_text": None, "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}  # fmt: skip
        await self.cache.prefill(knobs, self.stats, prompt, count)
        await self.respond(conn, knobs, reply)

    async def completions(self, conn: Connection, request: Request) -> None:
        knobs, body = await self.prelude(request)
        prompt = require(body, "prompt", (str, list), "string_type", "Input should be a valid string")
        model = self.model(body, knobs, "model", aliases=True)
        count, finish = completion_length(body, knobs, "max_tokens")
        prompt_tokens = count_words(prompt) or 1
        prompt = completion_prompt(prompt) if wanted(knobs) else ""
        head = {"id": request_id(request, "cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": model}  # fmt: skip
        if body.get("stream"):

            def choice(piece: str, reason: str | None) -> dict[str, Any]:
                return {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason, "stop_reason": None,
                        "prompt_token_ids": None, "token_ids": None}  # fmt: skip

            return await self.stream(conn, knobs, body, head, None, choice, count, finish, prompt_tokens, prompt)
        # Not captured from vLLM: this follows the field order of its CompletionResponse model.
        choice = {"index": 0, "text": "".join(PIECES[:count]), "logprobs": None, "finish_reason": finish,
                  "stop_reason": None, "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None}  # fmt: skip
        reply = {**head, "choices": [choice], "service_tier": None, "system_fingerprint": FINGERPRINT,
                 "usage": usage(prompt_tokens, count, True), "kv_transfer_params": None}  # fmt: skip
        await self.cache.prefill(knobs, self.stats, prompt, count)
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
                     finish: str, prompt_tokens: int, prompt: str) -> None:  # fmt: skip
        """Send the headers, prefill, then [the role chunk,] the content chunks (the last with finish_reason),
        [usage,] then [DONE].

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
        await self.cache.prefill(knobs, self.stats, prompt, tokens)  # vLLM's role chunk comes with the first token
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
        self.cache.clear()
        conn.send(200, dumps(dataclasses.asdict(self.knobs)))

    async def get_stats(self, conn: Connection, request: Request) -> None:
        conn.send(200, dumps(self.stats.as_json()))
