"""CORS headers, through the app (sanic-testing's ASGI client; no upstream is called)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sanic import Sanic

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization, X-Custom"}


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        ("*", "http://any.test", "http://any.test"),
        ("*", None, "*"),
        ("http://app.test,http://admin.test", "http://admin.test", "http://admin.test"),
        ("http://app.test,http://admin.test", "http://evil.test", None),
        ("http://app.test,http://admin.test", None, None),
        ("http://app.test", None, "http://app.test"),
        ("http://app.test", "http://app.test.evil.test", None),
    ],
)
async def test_allowed_origins_and_only_those_get_cors_headers(
    make_app: Callable[..., Sanic], origins: str, origin: str | None, allowed: str | None
) -> None:
    app = make_app(ALLOW_ORIGINS=origins)
    _, response = await app.asgi_client.get("/health", headers={"Origin": origin} if origin else {})
    assert response.status == 200
    assert response.headers.get("access-control-allow-origin") == allowed
    if allowed is None:
        assert "access-control-expose-headers" not in response.headers
        return
    exposed = response.headers["access-control-expose-headers"].split(",")
    assert {"x-request-id", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining"} <= set(exposed)
    assert (response.headers.get("vary") == "origin") == (allowed != "*")


async def test_a_preflight_gets_methods_headers_and_max_age_without_a_key(make_app: Callable[..., Sanic]) -> None:
    app = make_app(ALLOW_ORIGINS="http://app.test", API_KEY="secret")
    _, response = await app.asgi_client.options(
        "/v1/chat/completions", headers={"Origin": "http://app.test", **PREFLIGHT}
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == "http://app.test"
    assert response.headers["access-control-allow-headers"] == "authorization"  # X-Custom is not allowed
    assert "POST" in response.headers["access-control-allow-methods"].split(",")
    assert response.headers["access-control-max-age"] == "600"


async def test_an_options_request_that_is_no_preflight_gets_no_cors_headers(make_app: Callable[..., Sanic]) -> None:
    app = make_app(ALLOW_ORIGINS="*")
    _, response = await app.asgi_client.options("/v1/chat/completions", headers={"Origin": "http://app.test"})
    assert "access-control-allow-origin" not in response.headers


async def test_errors_carry_cors_headers_so_pages_can_read_them(make_app: Callable[..., Sanic]) -> None:
    app = make_app(ALLOW_ORIGINS="http://app.test", API_KEY="secret")
    _, response = await app.asgi_client.post("/v1/chat/completions", json={}, headers={"Origin": "http://app.test"})
    assert response.status == 401
    assert response.headers["access-control-allow-origin"] == "http://app.test"


# What openai-node 5 sends from a page (`dangerouslyAllowBrowser`), as Chromium lists it in the preflight.
OPENAI_JS_SDK = (
    "authorization,content-type,openai-organization,openai-project,x-stainless-arch,x-stainless-lang,"
    "x-stainless-os,x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
    "x-stainless-runtime-version,x-stainless-timeout"
)


async def test_a_preflight_of_the_openai_js_sdk_gets_every_header_it_asks_for(make_app: Callable[..., Sanic]) -> None:
    app = make_app(ALLOW_ORIGINS="http://app.test")
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": OPENAI_JS_SDK}
    _, response = await app.asgi_client.options("/v1/chat/completions", headers={"Origin": "http://app.test", **asked})
    assert response.status == 204
    assert response.headers["access-control-allow-headers"].split(",") == OPENAI_JS_SDK.split(",")
    # A header Stainless adds later is allowed too: the whole x-stainless- family is.
    asked["Access-Control-Request-Headers"] = "x-stainless-something-new"
    _, response = await app.asgi_client.options("/v1/chat/completions", headers={"Origin": "http://app.test", **asked})
    assert response.headers["access-control-allow-headers"] == "x-stainless-something-new"


@pytest.mark.parametrize(
    ("setting", "asked", "allowed"),
    [
        ("x-tenant, X-Trace", "X-Tenant, x-trace, x-other", "x-tenant,x-trace"),
        ("*", "x-anything, x-else", "x-anything,x-else"),
        ("", "x-tenant", None),
    ],
)
async def test_cors_allow_headers_extends_what_preflights_allow(
    make_app: Callable[..., Sanic], setting: str, asked: str, allowed: str | None
) -> None:
    app = make_app(ALLOW_ORIGINS="*", CORS_ALLOW_HEADERS=setting)
    headers = {
        "Origin": "http://app.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asked,
    }
    _, response = await app.asgi_client.options("/v1/chat/completions", headers=headers)
    assert response.status == 204
    assert response.headers.get("access-control-allow-headers") == allowed
