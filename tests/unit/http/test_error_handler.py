"""gateway/http/error_handler.py: what a client reads when a request fails, on /api and on /v1."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sanic import Sanic, json

from gateway.errors import ModelNotServed, NoUpstreamConfigured, RateLimited
from gateway.http.error_handler import GatewayErrorHandler
from gateway.http.requests import Request


@pytest.fixture
def app() -> Iterator[Sanic]:
    """A bare app with the gateway's handler and request class, and routes that fail on purpose."""
    app = Sanic("error_handler_test", error_handler=GatewayErrorHandler(), request_class=Request)
    failures: dict[str, Callable[[], BaseException]] = {
        "not-served": lambda: ModelNotServed("no route serves 'tinyy'"),
        "no-upstream": lambda: NoUpstreamConfigured("no route is configured"),
        "limited": lambda: RateLimited("slow down", headers={"retry-after": "7"}),
        "bug": lambda: KeyError("secret-internal-name"),
    }

    async def fail(request: Request, name: str) -> Any:
        raise failures[name]()

    async def ok(request: Request) -> Any:
        return json({"ok": True})

    for prefix in ("/api", "/v1"):
        app.add_route(fail, f"{prefix}/fail/<name>", name=f"fail{prefix.strip('/')}")
    app.add_route(ok, "/api/ok", methods=["GET"])
    yield app
    Sanic._app_registry.clear()


async def get(app: Sanic, path: str, method: str = "get") -> Any:
    _, response = await getattr(app.asgi_client, method)(path)
    return response


async def test_a_gateway_error_on_api_reads_as_the_gateways_envelope(app: Sanic) -> None:
    response = await get(app, "/api/fail/not-served")
    assert response.status == 409
    assert response.headers["content-type"] == "application/json"
    assert response.json == {
        "error": {"message": "no route serves 'tinyy'", "type": "routing_error", "code": "model_not_served"}
    }


async def test_the_same_error_on_v1_reads_as_openais(app: Sanic) -> None:
    # OpenAI's SDKs retry a 409; on /v1 a model nobody serves is OpenAI's 404 model_not_found.
    response = await get(app, "/v1/fail/not-served")
    assert response.status == 404
    assert response.json == {
        "error": {
            "message": "no route serves 'tinyy'",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


async def test_an_error_no_retry_can_mend_tells_the_sdks_not_to_retry(app: Sanic) -> None:
    response = await get(app, "/v1/fail/no-upstream")
    assert response.status == 502
    assert response.headers["x-should-retry"] == "false"
    assert response.json["error"]["code"] == "no_upstream_configured"


async def test_an_errors_own_headers_reach_the_client(app: Sanic) -> None:
    response = await get(app, "/api/fail/limited")
    assert response.status == 429
    assert response.headers["retry-after"] == "7"
    assert "x-should-retry" not in response.headers  # a rate limit does pass: retrying later helps


async def test_an_unexpected_exception_is_a_500_without_its_details(
    app: Sanic, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        response = await get(app, "/api/fail/bug")
    assert response.status == 500
    assert response.json == {
        "error": {"message": "internal gateway error", "type": "internal_error", "code": "internal_error"}
    }
    assert "secret-internal-name" not in response.text  # the traceback goes to the log only
    assert any(record.exc_info and "secret-internal-name" in repr(record.exc_info[1]) for record in caplog.records)


async def test_sanics_own_errors_use_the_same_envelope(app: Sanic) -> None:
    # (413 for a large body is enforced by the HTTP server, so tests/integration checks it.)
    response = await get(app, "/nope")
    assert response.status == 404
    assert response.json["error"] == {"message": "no such endpoint", "type": "not_found_error", "code": "not_found"}
    response = await get(app, "/api/ok", method="post")
    assert response.status == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    response = await get(app, "/v1/nope")
    assert response.json["error"]["param"] is None  # OpenAI's envelope always has `param`
