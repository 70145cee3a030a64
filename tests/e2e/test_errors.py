"""vLLM's errors relayed byte for byte; the gateway's own in its envelope."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.vllm import (
    TIMEOUT,
    VLLM_CHAT,
    Body,
    Headers,
    both,
    post,
)
from tests.procs import Gateway

from .conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


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
