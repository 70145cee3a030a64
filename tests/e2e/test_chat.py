"""Chat and completions, JSON and streamed, through the gateway and straight to vLLM: the same answers."""

from __future__ import annotations

import pytest

from tests.e2e.vllm import (
    EOS_AT_ONCE,
    FINGERPRINT,
    SAY_HELLO,
    SEEDED,
    STOP_AT_E,
    STREAM_SEEDED,
    USAGE,
    VLLM_CHAT,
    VLLM_COMPLETIONS,
    Body,
    both,
    compare_streams,
    normalised,
    post,
)
from tests.procs import Gateway

from .conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


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
