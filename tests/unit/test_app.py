"""The HTTP surface in one process: sanic-testing's ASGI client, upstreams mocked with respx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import respx
from sanic import Sanic

from tests.conftest import UPSTREAM_A, UPSTREAM_B

MODELS_A = {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "vllm"}]}
MODELS_B = {"object": "list", "data": [{"id": "embed", "object": "model"}, {"id": "tiny", "object": "model"}]}
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "usage": None}


@pytest.fixture
def upstream() -> respx.Router:
    """The fake upstreams, served to the gateway through its transport (nothing is patched)."""
    router = respx.Router(assert_all_called=False)
    router.get(f"{UPSTREAM_A}/models").respond(json=MODELS_A)
    router.get(f"{UPSTREAM_B}/models").respond(json={"object": "list", "data": [{"id": "embed"}]})
    return router


@pytest.fixture
def make_app(make_app: Callable[..., Sanic], upstream: respx.Router) -> Callable[..., Sanic]:
    def build(**env: str) -> Sanic:
        app = make_app(**env)
        app.ctx.upstream_transport = httpx.MockTransport(upstream.async_handler)
        return app

    return build


async def call(app: Sanic, method: str, path: str, **kwargs: Any) -> Any:
    _, response = await getattr(app.asgi_client, method)(path, **kwargs)
    return response


def error_of(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    return response.json["error"]


async def test_health_reports_the_default_route(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    response = await call(make_app(DEFAULT_MODEL_KEY="a"), "get", "/health")
    assert response.status == 200
    assert response.json == {"ok": True, "vllm": "ok"}
    upstream.get(f"{UPSTREAM_A}/models").mock(side_effect=httpx.ConnectError("refused"))
    response = await call(make_app(DEFAULT_MODEL_KEY="a"), "get", "/health")
    assert response.json == {"ok": True, "vllm": "unavailable"}


async def test_health_without_routes_is_unconfigured(make_app: Callable[..., Sanic]) -> None:
    response = await call(make_app(MODEL_ROUTE_a=None, MODEL_ROUTE_b=None), "get", "/health")
    assert response.json == {"ok": True, "vllm": "unconfigured"}


async def test_api_models_merges_routes_with_latency(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    upstream.get(f"{UPSTREAM_B}/models").respond(json=MODELS_B)
    response = await call(make_app(), "get", "/api/models")
    data = {model["id"]: model for model in response.json["data"]}
    assert response.json["object"] == "list"
    assert [source["source"] for source in data["tiny"]["sources"]] == ["a", "b"]
    assert all(isinstance(source["latency_ms"], int) for source in data["tiny"]["sources"])
    assert data["embed"]["object"] == "model"


async def test_model_lists_leave_out_a_down_route_and_disallowed_models(
    make_app: Callable[..., Sanic], upstream: respx.Router
) -> None:
    upstream.get(f"{UPSTREAM_B}/models").mock(side_effect=httpx.ConnectError("refused"))
    response = await call(make_app(), "get", "/api/models")
    assert [model["id"] for model in response.json["data"]] == ["tiny"]
    upstream.get(f"{UPSTREAM_B}/models").respond(json=MODELS_B)
    response = await call(make_app(ALLOWED_MODELS="embed"), "get", "/v1/models")
    assert response.json == {"object": "list", "data": [{"id": "embed", "object": "model"}]}


async def test_api_chat_sends_messages_and_returns_upstream_json(
    make_app: Callable[..., Sanic], upstream: respx.Router
) -> None:
    route = upstream.post(f"{UPSTREAM_A}/chat/completions").respond(json=COMPLETION)
    response = await call(
        make_app(),
        "post",
        "/api/chat",
        json={"message": "Hi", "system": "S", "model": "tiny", "max_tokens": 3},
        headers={"X-Request-ID": "abc-1"},
    )
    assert response.status == 200
    assert response.json == COMPLETION
    assert response.headers["x-request-id"] == "abc-1"
    sent = route.calls.last.request
    assert orjson.loads(sent.content) == {
        "model": "tiny",
        "max_tokens": 3,
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
        "stream": False,
    }
    assert sent.headers["x-request-id"].startswith("abc-1-")


async def test_api_chat_uses_default_model_name(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    route = upstream.post(f"{UPSTREAM_B}/chat/completions").respond(json=COMPLETION)
    response = await call(make_app(DEFAULT_MODEL_NAME="embed"), "post", "/api/chat", json={"message": "Hi"})
    assert response.status == 200
    assert orjson.loads(route.calls.last.request.content)["model"] == "embed"


async def test_v1_body_goes_upstream_byte_for_byte(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    route = upstream.post(f"{UPSTREAM_B}/embeddings").respond(json={"object": "list", "data": []})
    body = b'{ "input" : "x",\n "model":"embed", "extra_field": [1,2] }'
    response = await call(make_app(), "post", "/v1/embeddings", content=body)
    assert response.status == 200
    assert route.calls.last.request.content == body


async def test_x_model_key_header_routes_v1_requests(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    route = upstream.post(f"{UPSTREAM_B}/completions").respond(json={"object": "text_completion"})
    app = make_app()
    response = await call(
        app, "post", "/v1/completions", json={"model": "embed", "prompt": "x"}, headers={"X-Model-Key": "b"}
    )
    assert response.status == 200 and route.called
    # A model that route does not list: OpenAI's 404 (which the SDKs do not retry), and nothing is
    # sent upstream.
    response = await call(
        app, "post", "/v1/completions", json={"model": "tiny", "prompt": "x"}, headers={"X-Model-Key": "b"}
    )
    assert response.status == 404
    assert response.json["error"]["code"] == "model_not_found" and response.json["error"]["param"] == "model"
    assert route.call_count == 1


async def test_an_empty_x_model_key_header_is_no_key(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    # As on /api: the route is inferred from the model, not looked up under the key "" (a 404).
    route = upstream.post(f"{UPSTREAM_B}/completions").respond(json={"object": "text_completion"})
    response = await call(
        make_app(), "post", "/v1/completions", json={"model": "embed", "prompt": "x"}, headers={"X-Model-Key": ""}
    )
    assert response.status == 200 and route.called


async def test_upstream_error_status_and_body_are_relayed(
    make_app: Callable[..., Sanic], upstream: respx.Router
) -> None:
    body = b'{"error":{"message":"max_tokens too large","type":"BadRequestError","param":"max_tokens","code":400}}'
    upstream.post(f"{UPSTREAM_A}/chat/completions").respond(
        400, content=body, headers={"content-type": "application/json"}
    )
    response = await call(make_app(), "post", "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert response.status == 400
    assert response.body == body


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (httpx.ConnectError("refused"), 502, "upstream_unavailable"),
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("slow"), 504, "upstream_timeout"),
        (httpx.RemoteProtocolError("broken"), 502, "upstream_protocol_error"),
    ],
)
async def test_transport_failures_become_502_and_504(
    make_app: Callable[..., Sanic], upstream: respx.Router, failure: Exception, status: int, code: str
) -> None:
    upstream.post(f"{UPSTREAM_A}/chat/completions").mock(side_effect=failure)
    response = await call(make_app(), "post", "/api/chat", json={"message": "Hi", "modelKey": "a"})
    assert response.status == status
    assert error_of(response)["code"] == code
    assert "'a'" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"json": {"message": "Hi", "modelKey": "zzz"}}, 404, "unknown_model_key"),
        ({"json": {"message": "Hi", "model": "nope"}}, 409, "model_not_served"),
        ({"json": {"message": "Hi", "model": "tiny"}, "headers": {"X-Model-Key": "zzz"}}, 404, "unknown_model_key"),
        ({"content": b"{not json"}, 400, "invalid_json"),
        ({"json": {"message": "Hi", "temperature": "hot"}}, 400, "invalid_field"),
    ],
)
async def test_request_errors_use_the_envelope(
    make_app: Callable[..., Sanic],
    upstream: respx.Router,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await call(make_app(), "post", "/api/chat", **request_kwargs)
    assert response.status == status
    assert error_of(response)["code"] == code
    assert set(response.json["error"]) == {"message", "type", "code"}


async def test_model_outside_allowed_models_is_403(make_app: Callable[..., Sanic], upstream: respx.Router) -> None:
    response = await call(make_app(ALLOWED_MODELS="embed"), "post", "/v1/chat/completions", json={"model": "tiny"})
    assert response.status == 403
    assert error_of(response)["type"] == "permission_error"
