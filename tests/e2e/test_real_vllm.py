"""
End-to-end: the gateway in front of the real vLLM servers (CPU build, see conftest.py).

Most checks send one request through the gateway and the same request straight to vLLM and
compare the answers: the gateway must pass vLLM's JSON, events and errors through unchanged.
Requests are seeded (`"seed"` with `"temperature": 1.0`), so even the generated text must match.
Only `id` and `created` may differ: vLLM makes the completion id from the X-Request-Id header,
which the gateway sets to its own unique value per attempt, and `created` is the clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import socket
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.procs import Gateway

from .conftest import CHAT_MODEL, CHAT_ORIGIN, CHAT_URL, EMBED_MODEL, EMBED_URL

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(60.0, connect=5.0)
FINGERPRINT = re.compile(r"vllm-0\.32\.0-[0-9a-f]{8}")
EMBED_DIMS = 384
# vLLM's endpoints, for the direct requests.
VLLM_CHAT = f"{CHAT_URL}/chat/completions"
VLLM_COMPLETIONS = f"{CHAT_URL}/completions"
VLLM_EMBEDDINGS = f"{EMBED_URL}/embeddings"
# The fields of a vLLM answer that legitimately differ between two identical requests.
_VOLATILE = re.compile(rb'"id":"(?:chatcmpl|cmpl|embd)-[^"]*"|"created":\d+')

Body = dict[str, Any]
Headers = dict[str, str]


def normalised(body: bytes) -> bytes:
    """The body bytes with `id` and `created` blanked out, everything else as sent."""
    return _VOLATILE.sub(b"<volatile>", body)


def post(url: str, body: Body, headers: Headers | None = None) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=TIMEOUT)


def both(
    gateway: Gateway,
    path: str,
    vllm_url: str,
    body: Body,
    direct_body: Body | None = None,
    headers: Headers | None = None,
) -> tuple[httpx.Response, httpx.Response]:
    """`direct_body` (default: `body`) straight to vLLM, then `body` to the gateway's `path`."""
    direct = post(vllm_url, body if direct_body is None else direct_body)
    through = post(f"{gateway.url}{path}", body, headers)
    return direct, through


# --------------------------------------------------------------------------- SSE helpers


def sse_events(raw: bytes) -> tuple[list[tuple[str, str]], int]:
    """Parse an event stream into (event type, data) pairs; returns them and the comment count."""
    events: list[tuple[str, str]] = []
    comments = 0
    text = raw.decode("utf-8").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):  # a comment, such as the gateway's `: keepalive`
                comments += 1
            elif line.startswith("event:"):
                kind = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].removeprefix(" "))
        if data:
            events.append((kind, "\n".join(data)))
    return events, comments


def stream_summary(raw: bytes) -> dict[str, Any]:
    """What must be equal between two runs of one seeded stream, however vLLM groups tokens.

    Under load vLLM may merge several tokens' deltas into one chunk, so chunks are not compared
    one by one; instead: every event is a plain `data:` event, `[DONE]` comes exactly once and
    last, all chunks share one id and object type, and per choice the roles, the full text, the
    finish and stop reasons, plus the usage chunk and the fingerprint, are equal.
    """
    events, _ = sse_events(raw)
    kinds = {kind for kind, _ in events}
    assert kinds == {"message"}, f"unexpected event types {kinds}: {events[-3:]}"
    datas = [data for _, data in events]
    assert datas.count("[DONE]") == 1, f"[DONE] {datas.count('[DONE]')} times"
    assert datas[-1] == "[DONE]", "the stream does not end with [DONE]"
    chunks = [json.loads(data) for data in datas[:-1]]
    assert chunks, "no chunk before [DONE]"
    assert len({chunk["id"] for chunk in chunks}) == 1, "chunks of one stream with different ids"
    roles: list[tuple[int, str]] = []
    text: dict[int, str] = defaultdict(str)
    finish: dict[int, tuple[Any, Any]] = {}
    usage: list[Any] = []
    fingerprints: list[str] = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            index = choice["index"]
            delta = choice.get("delta")
            if delta is not None:  # chat.completion.chunk
                if "role" in delta:
                    roles.append((index, delta["role"]))
                text[index] += delta.get("content") or ""
            else:  # text_completion
                text[index] += choice.get("text") or ""
            if choice.get("finish_reason") is not None:
                assert index not in finish, f"choice {index} finished twice"
                finish[index] = (choice["finish_reason"], choice.get("stop_reason"))
        if chunk.get("usage") is not None:
            usage.append(chunk["usage"])
        if "system_fingerprint" in chunk:
            fingerprints.append(chunk["system_fingerprint"])
    return {
        "object": sorted({chunk["object"] for chunk in chunks}),
        "model": sorted({chunk["model"] for chunk in chunks}),
        "roles": roles,
        "text": dict(text),
        "finish": finish,
        "usage": usage,
        "fingerprints": fingerprints,
        "id": chunks[0]["id"],
    }


def compare_streams(direct: httpx.Response, through: httpx.Response) -> dict[str, Any]:
    """Both streams summarised and compared; returns the gateway's summary (with its `id`)."""
    assert direct.status_code == 200, direct.text
    assert through.status_code == 200, through.text
    assert through.headers["content-type"].startswith("text/event-stream")
    expected, got = stream_summary(direct.content), stream_summary(through.content)
    expected.pop("id")
    got_id = got.pop("id")
    assert got == expected
    return {**got, "id": got_id}


# --------------------------------------------------------------------------- vLLM metrics


def vllm_metrics() -> dict[str, float]:
    """The `vllm:` samples of the chat server's /metrics (name with labels -> value)."""
    text = httpx.get(f"{CHAT_ORIGIN}/metrics", timeout=5.0).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric(samples: dict[str, float], family: str) -> float:
    """The sum of the samples of `family` for the chat model (over all its other labels)."""
    total = 0.0
    for name, value in samples.items():
        base, _, labels = name.partition("{")
        if base == family and f'model_name="{CHAT_MODEL}"' in labels:
            total += value
    return total


def running() -> float:
    return metric(vllm_metrics(), "vllm:num_requests_running")


def wait_idle(timeout: float = 10.0) -> None:
    """Wait (bounded) until vLLM runs no request, so that its counters measure one request."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if running() == 0:
                return
        except httpx.HTTPError:
            pass  # /metrics can be slow to answer while the engine is busy
        assert time.monotonic() < deadline, f"vLLM still runs a request after {timeout} s"
        time.sleep(0.05)


# =========================================================================== health and models


def test_health_reports_vllm_ok(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/health", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "vllm": "ok"}


def test_api_models_aggregates_both_servers(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/api/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    by_id = {entry["id"]: entry for entry in body["data"]}
    assert set(by_id) == {CHAT_MODEL, EMBED_MODEL}
    assert len(body["data"]) == 2, "models must be de-duplicated by id"
    for model, key in ((CHAT_MODEL, "tiny"), (EMBED_MODEL, "embed")):
        entry = by_id[model]
        assert entry["object"] == "model"
        assert [source["source"] for source in entry["sources"]] == [key]
        latency = entry["sources"][0]["latency_ms"]
        assert isinstance(latency, int) and not isinstance(latency, bool) and latency >= 0, entry


def _stable_model_card(card: Body) -> Body:
    # vLLM stamps `created` and a fresh permission id on every /v1/models answer.
    card = {key: value for key, value in card.items() if key != "created"}
    card["permission"] = [
        {key: value for key, value in perm.items() if key not in ("id", "created")}
        for perm in card.get("permission", [])
    ]
    return card


def test_v1_models_is_the_union_of_both_servers(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    direct = httpx.get(f"{CHAT_URL}/models", timeout=TIMEOUT).json()["data"]
    direct += httpx.get(f"{EMBED_URL}/models", timeout=TIMEOUT).json()["data"]
    expected = {card["id"]: _stable_model_card(card) for card in direct}
    got = {card["id"]: _stable_model_card(card) for card in body["data"]}
    assert len(body["data"]) == len(got) == 2
    assert got == expected


# =========================================================================== non-streaming


SAY_HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]
SEEDED = {"max_tokens": 12, "temperature": 1.0, "seed": 42}
STOP_AT_E = {"max_tokens": 30, "temperature": 1.0, "seed": 42, "stop": ["e"]}
EOS_AT_ONCE = {"max_tokens": 8, "logit_bias": {"5": 100}}  # token 5 is <|im_end|>, the EOS


@pytest.mark.parametrize(
    "routing",
    [
        pytest.param({}, id="default-route"),
        pytest.param({"model": CHAT_MODEL}, id="route-inferred-from-model"),
        pytest.param({"modelKey": "tiny"}, id="modelKey"),
    ],
)
def test_api_chat_returns_vllm_json_unchanged(gateway: Gateway, routing: Body) -> None:
    """`/api/chat` builds `messages` from `system` + `message`; `seed` passes through (else the
    sampled text would differ); the answer is vLLM's JSON byte for byte, bar id and created."""
    body = {"message": "Say hello", "system": "You are terse.", **SEEDED, **routing}
    direct_body = {"messages": SAY_HELLO, **SEEDED, "stream": False}
    if "model" in routing:
        direct_body["model"] = routing["model"]
    direct, through = both(gateway, "/api/chat", VLLM_CHAT, body, direct_body)
    assert direct.status_code == 200, direct.text
    assert through.status_code == 200, through.text
    assert through.headers["content-type"].startswith("application/json")
    assert normalised(through.content) == normalised(direct.content)
    answer = through.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"], "seeded sampling should produce text"
    assert FINGERPRINT.fullmatch(answer["system_fingerprint"])
    # The request id goes upstream: vLLM names the completion after it.
    request_id = through.headers["x-request-id"]
    assert request_id and request_id in answer["id"]


@pytest.mark.parametrize(
    ("path", "vllm_url", "body"),
    [
        pytest.param("/v1/chat/completions", VLLM_CHAT, {"messages": SAY_HELLO, **SEEDED}, id="chat"),
        pytest.param("/v1/chat/completions", VLLM_CHAT, {"messages": SAY_HELLO, **STOP_AT_E}, id="chat-stop-string"),
        pytest.param("/v1/chat/completions", VLLM_CHAT, {"messages": SAY_HELLO, **EOS_AT_ONCE}, id="chat-eos"),
        pytest.param("/v1/completions", VLLM_COMPLETIONS, {"prompt": "Hello", **SEEDED}, id="completions"),
    ],
)
def test_v1_non_streaming_is_vllm_json_unchanged(gateway: Gateway, path: str, vllm_url: str, body: Body) -> None:
    body = {"model": CHAT_MODEL, **body}
    direct, through = both(gateway, path, vllm_url, body)
    assert direct.status_code == 200, direct.text
    assert through.status_code == 200, through.text
    assert through.headers["content-type"].startswith("application/json")
    assert normalised(through.content) == normalised(direct.content)
    assert FINGERPRINT.fullmatch(through.json()["system_fingerprint"])


# =========================================================================== streaming


USAGE = {"stream_options": {"include_usage": True}}
STREAM_SEEDED = {"max_tokens": 12, "temperature": 1.0, "seed": 7, **USAGE}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(STREAM_SEEDED, id="seeded-usage"),
        pytest.param(STOP_AT_E, id="stop-string-no-usage"),
        pytest.param({**EOS_AT_ONCE, **USAGE}, id="eos"),
        pytest.param({"max_tokens": 3, "n": 2, "temperature": 1.0, "seed": 1, **USAGE}, id="n2"),
    ],
)
def test_v1_chat_stream_matches_direct(gateway: Gateway, body: Body) -> None:
    body = {"model": CHAT_MODEL, "messages": SAY_HELLO, **body, "stream": True}
    direct, through = both(gateway, "/v1/chat/completions", VLLM_CHAT, body)
    summary = compare_streams(direct, through)
    n = body.get("n", 1)
    assert summary["object"] == ["chat.completion.chunk"]
    assert sorted(summary["roles"]) == [(index, "assistant") for index in range(n)]
    assert len(summary["finish"]) == n
    assert len(summary["usage"]) == (1 if "stream_options" in body else 0)
    assert len(summary["fingerprints"]) == 1 and FINGERPRINT.fullmatch(summary["fingerprints"][0])
    assert through.headers["x-request-id"] in summary["id"]


def test_v1_chat_stream_seeded_text_and_usage(gateway: Gateway) -> None:
    """The seeded case spelled out: real text, finish `length`, usage equal to max_tokens."""
    body = {"model": CHAT_MODEL, "messages": SAY_HELLO, **STREAM_SEEDED, "stream": True}
    direct, through = both(gateway, "/v1/chat/completions", VLLM_CHAT, body)
    summary = compare_streams(direct, through)
    assert summary["text"][0], "seeded sampling should produce text"
    assert summary["finish"] == {0: ("length", None)}
    assert summary["usage"][0]["completion_tokens"] == STREAM_SEEDED["max_tokens"]
    # The same text as the non-streaming answer to the same seeded request.
    plain = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
    assert summary["text"][0] == post(VLLM_CHAT, plain).json()["choices"][0]["message"]["content"]


def test_api_chat_stream_matches_direct(gateway: Gateway) -> None:
    body = {"message": "Say hello", "system": "You are terse.", **STREAM_SEEDED}
    direct_body = {"messages": SAY_HELLO, **STREAM_SEEDED, "stream": True}
    direct, through = both(gateway, "/api/chat/stream", VLLM_CHAT, body, direct_body)
    summary = compare_streams(direct, through)
    assert summary["text"][0]
    assert summary["roles"] == [(0, "assistant")]
    assert summary["finish"] == {0: ("length", None)}
    assert len(summary["usage"]) == 1


def test_v1_completions_stream_matches_direct(gateway: Gateway) -> None:
    body = {"model": CHAT_MODEL, "prompt": "Hello", "max_tokens": 6, "temperature": 1.0, "seed": 3, **USAGE}
    direct, through = both(gateway, "/v1/completions", VLLM_COMPLETIONS, {**body, "stream": True})
    summary = compare_streams(direct, through)
    assert summary["object"] == ["text_completion"]
    assert summary["text"][0]
    assert summary["finish"] == {0: ("length", None)}
    assert summary["usage"][0]["completion_tokens"] == 6


# =========================================================================== embeddings


def _vectors(answer: Body) -> list[list[float]]:
    vectors = []
    for item in answer["data"]:
        value = item["embedding"]
        if isinstance(value, str):  # base64 of little-endian float32
            raw = base64.b64decode(value)
            value = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        vectors.append(value)
    return vectors


FOX = "The quick brown fox"
PETS = ["a cat", "a dog"]


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        pytest.param("/api/embeddings", {"input": FOX, "model": EMBED_MODEL}, None, id="api-inferred"),
        pytest.param("/api/embeddings", {"input": PETS, "modelKey": "embed"}, None, id="api-modelKey-batch"),
        pytest.param("/v1/embeddings", {"input": FOX, "model": EMBED_MODEL}, None, id="v1-floats"),
        pytest.param(
            "/v1/embeddings",
            {"input": PETS, "model": EMBED_MODEL, "encoding_format": "base64"},
            {"X-Model-Key": "embed"},
            id="v1-base64-header-key",
        ),
    ],
)
def test_embeddings_equal_direct(gateway: Gateway, path: str, body: Body, headers: Headers | None) -> None:
    direct_body = {key: value for key, value in body.items() if key != "modelKey"}
    direct_body.setdefault("model", EMBED_MODEL)
    direct, through = both(gateway, path, VLLM_EMBEDDINGS, body, direct_body, headers)
    assert direct.status_code == 200, direct.text
    assert through.status_code == 200, through.text
    assert normalised(through.content) == normalised(direct.content)
    got, expected = _vectors(through.json()), _vectors(direct.json())
    assert len(got) == (len(body["input"]) if isinstance(body["input"], list) else 1)
    assert all(len(vector) == EMBED_DIMS for vector in got)
    assert got == expected
    if body.get("encoding_format") == "base64":
        assert all(isinstance(item["embedding"], str) for item in through.json()["data"])


# =========================================================================== errors


def _assert_relayed(direct: httpx.Response, through: httpx.Response, status: int) -> None:
    assert direct.status_code == status, direct.text
    assert through.status_code == status, through.text
    assert through.content == direct.content
    assert through.headers["content-type"].startswith("application/json")
    assert through.json()["error"]["code"] == status


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("problem", "status"),
    [
        pytest.param({"max_tokens": 4096}, 400, id="max-tokens-over-context"),  # the context is 2048
    ],
)
def test_vllm_errors_are_relayed_byte_for_byte_v1(gateway: Gateway, stream: bool, problem: Body, status: int) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **problem}
    direct, through = both(gateway, "/v1/chat/completions", VLLM_CHAT, body, headers={"X-Model-Key": "tiny"})
    _assert_relayed(direct, through, status)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("problem", "status"),
    [
        pytest.param({"max_tokens": 4096}, 400, id="max-tokens-over-context"),
    ],
)
def test_vllm_errors_are_relayed_byte_for_byte_api(gateway: Gateway, path: str, problem: Body, status: int) -> None:
    direct_body = {key: value for key, value in problem.items() if key != "modelKey"}
    direct_body.update(messages=[{"role": "user", "content": "hi"}], stream=path.endswith("/stream"))
    direct, through = both(gateway, path, VLLM_CHAT, {"message": "hi", **problem}, direct_body)
    _assert_relayed(direct, through, status)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
            {"X-Model-Key": "tiny"},
        ),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            {"X-Model-Key": "tiny"},
        ),
        ("/api/chat", {"message": "hi", "model": "nope", "modelKey": "tiny"}, None),
        ("/api/chat/stream", {"message": "hi", "model": "nope", "modelKey": "tiny"}, None),
        ("/v1/embeddings", {"model": "nope", "input": "hi"}, {"X-Model-Key": "embed"}),
    ],
    ids=["v1", "v1-stream", "api", "api-stream", "embeddings"],
)
def test_a_model_the_chosen_route_does_not_serve_is_refused_first(
    gateway: Gateway, path: str, body: Body, headers: Headers | None
) -> None:
    # The gateway knows the route's /models list and says so before vLLM would: 409 on /api, and
    # on /v1 what OpenAI (and vLLM) answer, 404 `model_not_found`, which the SDKs do not retry.
    through = post(f"{gateway.url}{path}", body, headers)
    error = through.json()["error"]
    if path.startswith("/v1/"):
        assert through.status_code == 404, through.text
        assert error["code"] == "model_not_found" and error["param"] == "model"
    else:
        assert through.status_code == 409, through.text
        assert error["code"] == "model_not_served"
    assert "'nope'" in error["message"]


@pytest.mark.parametrize(
    ("path", "content", "headers", "status"),
    [
        pytest.param("/v1/chat/completions", b'{"model": "tiny-llama", "messages": [', {}, 400, id="malformed-json"),
        pytest.param("/api/chat", b'{"message": 5}', {}, 400, id="wrong-type"),
        pytest.param("/api/chat", b'{"message": "hi"}', {"X-Model-Key": "nope"}, 404, id="unknown-modelKey"),
        pytest.param("/v1/chat/completions", b'{"model": "no-such", "messages": []}', {}, 404, id="model-unserved"),
    ],
)
def test_gateway_errors_use_the_error_envelope(
    gateway: Gateway, path: str, content: bytes, headers: Headers, status: int
) -> None:
    headers = {"content-type": "application/json", **headers}
    response = httpx.post(f"{gateway.url}{path}", content=content, headers=headers, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["code"], (int, str)) and not isinstance(error["code"], bool)
    assert response.headers.get("x-request-id")


# =========================================================================== the openai SDK


def test_openai_sdk_through_the_gateway(gateway: Gateway) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60.0)
    try:
        assert {model.id for model in client.models.list()} == {CHAT_MODEL, EMBED_MODEL}

        messages = [{"role": "user", "content": "Say hello"}]
        sampling = {"max_tokens": 10, "temperature": 1.0, "seed": 11}
        expected = post(VLLM_CHAT, {"model": CHAT_MODEL, "messages": messages, **sampling}).json()
        expected_text = expected["choices"][0]["message"]["content"]
        completion = client.chat.completions.create(model=CHAT_MODEL, messages=messages, **sampling)
        assert completion.choices[0].message.content == expected_text
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 10
        assert FINGERPRINT.fullmatch(completion.system_fingerprint or "")

        stream = client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}, **sampling
        )
        chunks = list(stream)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == expected_text
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10

        # The SDK asks for base64 by default and decodes it; the vectors must equal vLLM's floats.
        direct = post(VLLM_EMBEDDINGS, {"model": EMBED_MODEL, "input": PETS}).json()
        embedded = client.embeddings.create(model=EMBED_MODEL, input=PETS)
        got = [list(map(float, item.embedding)) for item in embedded.data]
        assert [len(vector) for vector in got] == [EMBED_DIMS, EMBED_DIMS]
        assert got == _vectors(direct)
    finally:
        client.close()


# =========================================================================== client disconnects


ENDLESS = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "ignore_eos": True}
ABORT_DEADLINE_SECONDS = 2.0
ABORT_ATTEMPTS = 5
# An attempt counts as conclusive when the stream started, each /metrics poll was answered, and
# this test's own polling loop kept its pace, within this long (normally a few tens of ms).
RESPONSIVE_SECONDS = 0.25
POLL_PAUSE = 0.05
LEAK_GRACE_SECONDS = 2.0
HANG_UP_AFTER = 0.3  # for clients that do not read: long enough for the generation to be under way
_TCP_STATES = {"01": "ESTABLISHED", "08": "CLOSE_WAIT"}


def _process_tree(root: int) -> list[int]:
    """`root` and its descendants (the gateway's main process and its Sanic workers)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children[parent].append(int(entry))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, ()))
    return tree


def _socket_owners(pids: list[int]) -> dict[str, int]:
    """Socket inode -> the pid (of `pids`) holding it open."""
    owners: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[len("socket:[") : -1]] = pid
    return owners


def unread_upstream_sockets(gateway: Gateway) -> dict[str, str]:
    """The gateway's TCP connections to vLLM's chat port that have unread data waiting.

    The gateway's upstream connection of an abandoned request must be closed. One that is left
    open keeps receiving vLLM's events, which nobody reads: it shows here (Linux /proc/net/tcp,
    the owner found through /proc/PID/fd). Returns {socket inode: description}.
    """
    port = f"0100007F:{int(CHAT_URL.rsplit(':', 1)[1].split('/')[0]):04X}"
    owners = _socket_owners(_process_tree(gateway.pid))
    found: dict[str, str] = {}
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], fields[9]
            rx_queue = int(queues.split(":")[1], 16)
            # In CLOSE_WAIT the peer's FIN counts as one byte: an idle pooled connection that vLLM
            # closed (keep-alive timeout) shows 1. A left-open stream holds kilobytes.
            if remote == port and state in _TCP_STATES and rx_queue > 1 and inode in owners:
                local_port = int(local.split(":")[1], 16)
                found[inode] = (
                    f"gateway pid {owners[inode]}: 127.0.0.1:{local_port} -> {CHAT_URL} {_TCP_STATES[state]}, "
                    f"{rx_queue} bytes unread"
                )
    return found


@dataclass
class AbortAttempt:
    """One disconnect, and what vLLM's /metrics (and the TCP table) showed after it."""

    started_after: float  # how long the client was held up before it could hang up, in seconds
    slowest_poll: float = 0.0  # the slowest /metrics answer after the disconnect
    longest_gap: float = 0.0  # the longest time between two /metrics answers, beyond the pause
    idle_after: float | None = None  # seconds from the disconnect to running == 0 (None: not in time)
    generated: float = 0.0  # tokens generated by the request (vllm:generation_tokens_total delta)
    finished: float = 0.0  # requests vLLM counted as finished (vllm:request_success_total delta)
    leaked: tuple[str, ...] = ()  # upstream connections left open with unread data

    @property
    def aborted(self) -> bool:
        """It ran, stopped within the deadline, before its 2000 tokens, and never finished.

        On vLLM 0.32.0 an aborted request moves no `vllm:request_success_total` series (not
        even `finished_reason="abort"`), and `vllm:generation_tokens_total` counts only the
        tokens made before the abort; a request that ran to its end adds 2000 and one finish.
        """
        return (
            self.generated > 0
            and self.idle_after is not None
            and self.idle_after <= ABORT_DEADLINE_SECONDS
            and self.generated < ENDLESS["max_tokens"]
            and self.finished == 0
            and not self.leaked
        )

    @property
    def conclusive(self) -> bool:
        """Whether a failure of this attempt can only be the gateway's.

        A leaked upstream connection always is. Otherwise: on a 2-core machine vLLM's API
        server sometimes gets no CPU for a whole generation (its output loop and the engine take
        both cores): it then sends a stream's first byte only at the end, answers /metrics only
        at the end, and notices a closed connection only at the end. Other load on the machine
        can stall the gateway or this test the same way. Such an attempt proves nothing either
        way and is repeated; only a clean one may fail the test.
        """
        if self.leaked:
            return True
        responsive = max(self.started_after, self.slowest_poll, self.longest_gap) <= RESPONSIVE_SECONDS
        return responsive and (self.generated > 0 or self.finished > 0)


def _observe_abort(gateway: Gateway, disconnect: Callable[[], float]) -> AbortAttempt:
    """Run `disconnect()` (it sends a request, hangs up, and returns how long it was held up
    beyond its plan), then watch vLLM's /metrics for the end of the generation."""
    wait_idle()
    already_open = unread_upstream_sockets(gateway)
    before = vllm_metrics()
    attempt = AbortAttempt(started_after=disconnect())
    closed_at = time.monotonic()
    time.sleep(POLL_PAUSE)  # let vLLM act on the closed connection before /metrics competes with it
    previous = time.monotonic()
    while True:
        asked = time.monotonic()
        try:
            value: float | None = running()
        except httpx.HTTPError:
            value = None
        answered = time.monotonic()
        attempt.slowest_poll = max(attempt.slowest_poll, answered - asked)
        attempt.longest_gap = max(attempt.longest_gap, answered - previous - POLL_PAUSE)
        previous = answered
        if value == 0:
            attempt.idle_after = answered - closed_at
            break
        if answered - closed_at > ABORT_DEADLINE_SECONDS:
            break
        time.sleep(POLL_PAUSE)
    wait_idle()
    time.sleep(0.3)  # the counters settle
    after = vllm_metrics()
    attempt.generated = metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total")
    attempt.finished = metric(after, "vllm:request_success_total") - metric(before, "vllm:request_success_total")
    leaked = {inode: text for inode, text in unread_upstream_sockets(gateway).items() if inode not in already_open}
    if leaked:  # a busy gateway gets more time before its connection counts as left open
        time.sleep(LEAK_GRACE_SECONDS)
        leaked = {inode: text for inode, text in unread_upstream_sockets(gateway).items() if inode in leaked}
    attempt.leaked = tuple(leaked.values())
    return attempt


def _assert_disconnect_aborts(gateway: Gateway, disconnect: Callable[[], float]) -> None:
    attempts: list[AbortAttempt] = []
    for _ in range(ABORT_ATTEMPTS):
        attempt = _observe_abort(gateway, disconnect)
        attempts.append(attempt)
        if attempt.aborted:
            print(f"abort seen in attempt {len(attempts)}: {attempts}")
            return
        if attempt.leaked:
            pytest.fail(
                "the client hung up, but the gateway left its upstream connection open, with vLLM's events "
                f"piling up unread in it; vLLM generated {attempt.generated:.0f} of {ENDLESS['max_tokens']} "
                f"tokens: {attempt}",
                pytrace=False,
            )
        if attempt.conclusive:
            pytest.fail(
                f"the client hung up, but vLLM did not abort the generation within {ABORT_DEADLINE_SECONDS} s "
                f"although it was responsive throughout: {attempt}",
                pytrace=False,
            )
    pytest.fail(
        f"no conclusive attempt in {ABORT_ATTEMPTS}: the machine was too busy each time for the abort to be "
        f"measured (see AbortAttempt.conclusive), and the generation was never aborted: {attempts}",
        pytrace=False,
    )


def _raw_request(gateway: Gateway, body: Body) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def _send_and_hang_up(gateway: Gateway, request: bytes, *, whole_answer_possible: bool) -> float:
    """Send `request` on a raw socket, read nothing, hang up after HANG_UP_AFTER seconds.

    Returns how long the client was held up beyond that: infinite (an inconclusive attempt) when
    a non-streaming answer came before the hang-up, that is, the generation had already ended.
    """
    sent = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5.0) as sock:
        sock.sendall(request)
        time.sleep(HANG_UP_AFTER)  # /metrics is not polled meanwhile: it competes with vLLM for the CPU
        late = time.monotonic() - sent - HANG_UP_AFTER
        if whole_answer_possible:
            sock.setblocking(False)
            try:
                if sock.recv(65536):
                    return math.inf
            except BlockingIOError:
                pass
    return late


@pytest.mark.parametrize("client", ["reads-a-few-events", "reads-nothing"])
def test_stream_client_disconnect_aborts_the_generation(gateway: Gateway, client: str) -> None:
    """A client hangs up in the middle of a long stream: vLLM must stop generating within 2 s.

    `reads-a-few-events` reads four events first; `reads-nothing` sends the request on a raw
    socket and closes it after a moment without reading anything.
    """

    def read_a_few_and_hang_up() -> float:
        sent = time.monotonic()
        with httpx.Client(timeout=TIMEOUT) as http:
            url, body = f"{gateway.url}/v1/chat/completions", {**ENDLESS, "stream": True}
            with http.stream("POST", url, json=body) as reply:
                assert reply.status_code == 200, reply.read()
                lines = reply.iter_lines()  # held: a dropped generator would close the connection early
                seen = 0
                for line in lines:
                    if line.startswith("data:"):
                        assert line != "data: [DONE]", "the stream ended before the client hung up"
                        seen += 1
                        if seen == 4:
                            break
                assert seen == 4
                held_up = time.monotonic() - sent
        # Leaving the blocks closes the connection to the gateway, mid-stream.
        return held_up

    if client == "reads-nothing":
        request = _raw_request(gateway, {**ENDLESS, "stream": True})
        _assert_disconnect_aborts(gateway, lambda: _send_and_hang_up(gateway, request, whole_answer_possible=False))
    else:
        _assert_disconnect_aborts(gateway, read_a_few_and_hang_up)


def test_non_streaming_client_disconnect_aborts_the_generation(gateway: Gateway) -> None:
    """The same for a non-streaming request: the client hangs up while vLLM generates."""
    request = _raw_request(gateway, ENDLESS)
    _assert_disconnect_aborts(gateway, lambda: _send_and_hang_up(gateway, request, whole_answer_possible=True))


# =========================================================================== request ids


async def test_concurrent_requests_sharing_one_request_id_all_succeed(gateway: Gateway) -> None:
    request_id = f"e2e-shared-{uuid.uuid4().hex[:12]}"
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"X-Request-ID": request_id}
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        requests = (client.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers) for _ in range(5))
        responses = await asyncio.wait_for(asyncio.gather(*requests), timeout=60)
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 5, [response.text for response in responses]
    assert [response.headers["x-request-id"] for response in responses] == [request_id] * 5
    ids = [response.json()["id"] for response in responses]
    # vLLM names each completion after the X-Request-Id it got: the client's id went upstream,
    # and each attempt carried a unique one (so vLLM's logs tell the five apart).
    assert all(request_id in completion_id for completion_id in ids), ids
    assert len(set(ids)) == 5, ids
