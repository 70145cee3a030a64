"""gateway/middleware.py: the request id, admission and the headers every response carries."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sanic import Sanic


async def call(app: Sanic, path: str, headers: dict[str, str] | None = None) -> Any:
    _, response = await app.asgi_client.get(path, headers=headers or {})
    return response


async def test_a_safe_request_id_is_echoed(make_app: Callable[..., Sanic]) -> None:
    response = await call(make_app(), "/api/routes", {"X-Request-ID": "client-42:retry.1"})
    assert response.headers["x-request-id"] == "client-42:retry.1"


@pytest.mark.parametrize("incoming", [None, "bad id\twith spaces", "x" * 129, "<script>"])
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_new_one(
    make_app: Callable[..., Sanic], incoming: str | None
) -> None:
    app = make_app()
    headers = {"X-Request-ID": incoming} if incoming is not None else {}
    first, second = [await call(app, "/api/routes", headers) for _ in range(2)]
    for response in first, second:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_refused_request_still_gets_its_id_rate_and_cors_headers(make_app: Callable[..., Sanic]) -> None:
    # The guard refuses it before any handler runs; a page must still be able to read why.
    app = make_app(API_KEY="right", RATE_LIMIT_PER_MIN="30", ALLOW_ORIGINS="http://app.test")
    response = await call(app, "/api/routes", {"Origin": "http://app.test", "X-Request-ID": "r-1"})
    assert response.status == 401
    assert response.headers["x-request-id"] == "r-1"
    assert response.headers["access-control-allow-origin"] == "http://app.test"
    assert response.headers["x-ratelimit-limit"] == "30"
