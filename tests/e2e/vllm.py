"""
What the end-to-end tests share: requests to the gateway and straight to vLLM, and the comparison
of their answers (the real vLLM servers are started by conftest.py).

Most checks send one request through the gateway and the same request straight to vLLM and
compare the answers: the gateway must pass vLLM's JSON, events and errors through unchanged.
Requests are seeded (`"seed"` with `"temperature": 1.0`), so even the generated text must match.
Only `id` and `created` may differ: vLLM makes the completion id from the X-Request-Id header,
which the gateway sets to its own unique value per attempt, and `created` is the clock.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from collections import defaultdict
from typing import Any

import httpx

from tests.procs import Gateway

from .conftest import CHAT_MODEL, CHAT_ORIGIN, CHAT_URL, EMBED_URL

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


SAY_HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


SEEDED = {"max_tokens": 12, "temperature": 1.0, "seed": 42}


STOP_AT_E = {"max_tokens": 30, "temperature": 1.0, "seed": 42, "stop": ["e"]}


EOS_AT_ONCE = {"max_tokens": 8, "logit_bias": {"5": 100}}  # token 5 is <|im_end|>, the EOS


USAGE = {"stream_options": {"include_usage": True}}


STREAM_SEEDED = {"max_tokens": 12, "temperature": 1.0, "seed": 7, **USAGE}


FOX = "The quick brown fox"


PETS = ["a cat", "a dog"]


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


def vectors(answer: Body) -> list[list[float]]:
    vectors = []
    for item in answer["data"]:
        value = item["embedding"]
        if isinstance(value, str):  # base64 of little-endian float32
            raw = base64.b64decode(value)
            value = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        vectors.append(value)
    return vectors
