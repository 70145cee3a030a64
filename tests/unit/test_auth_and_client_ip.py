from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sanic.compat import Header

from gateway.admission.auth import ApiKeyAuth
from gateway.admission.client_ip import ClientIP, parse_networks
from gateway.admission.guard import Guard
from gateway.admission.ratelimit import LocalLimiter
from gateway.errors import Unauthorized
from gateway.settings import Settings


def fake_request(ip: str = "127.0.0.1", **headers: Any) -> Any:
    return SimpleNamespace(ip=ip, headers=Header({key.replace("_", "-"): value for key, value in headers.items()}))


@pytest.mark.parametrize(
    "headers",
    [{"x_api_key": "k1"}, {"x_api_key": "k2"}, {"authorization": "Bearer k2"}, {"authorization": "bearer  k1 "}],
)
def test_any_configured_key_is_accepted_either_way(headers: dict[str, str]) -> None:
    ApiKeyAuth(("k1", "k2")).check(fake_request(**headers))


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Basic k1"}, "missing_api_key"),
        ({"x_api_key": "k3"}, "invalid_api_key"),
        ({"authorization": "Bearer k"}, "invalid_api_key"),
        ({"x_api_key": "k1k1"}, "invalid_api_key"),
        # A header byte that is not UTF-8 (Sanic keeps it as a surrogate): a wrong key, not a 500.
        ({"x_api_key": b"k\xe9".decode("utf-8", "surrogateescape")}, "invalid_api_key"),
        ({"authorization": "Bearer " + b"\xff".decode("utf-8", "surrogateescape")}, "invalid_api_key"),
    ],
)
def test_missing_or_wrong_keys_are_401(headers: dict[str, str], code: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        ApiKeyAuth(("k1", "k2")).check(fake_request(**headers))
    assert caught.value.code == code
    assert "k1" not in caught.value.message


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert ClientIP(()).of(fake_request("203.0.113.9", x_forwarded_for="1.1.1.1")) == "203.0.113.9"


def test_forwarded_for_is_read_past_trusted_proxies_only() -> None:
    client_ip = ClientIP(parse_networks(["127.0.0.1", "10.0.0.0/8"]))
    assert client_ip.of(fake_request("127.0.0.1", x_forwarded_for="6.6.6.6, 198.51.100.7, 10.1.2.3")) == "198.51.100.7"
    # A peer that is not a trusted proxy cannot choose its address.
    assert client_ip.of(fake_request("203.0.113.9", x_forwarded_for="1.1.1.1")) == "203.0.113.9"
    assert client_ip.of(fake_request("127.0.0.1")) == "127.0.0.1"
    assert client_ip.of(fake_request("127.0.0.1", x_forwarded_for="[2001:db8::1]:443")) == "2001:db8::1"


def test_bad_trusted_proxy_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["localhost"])


async def test_the_guard_admits_sanics_stand_in_for_an_unreadable_head(
    settings_from: Callable[..., Settings],
) -> None:
    # A head that timed out, was too large or malformed: Sanic reports it (408, 413, 400) on a
    # made-up request with method NONE and no headers, after running the request middleware.
    # Neither the key check nor the limit may answer for it instead.
    limiter = LocalLimiter(1)
    guard = Guard(settings_from(API_KEY="k1", RATE_LIMIT_PER_MIN="1"), limiter, ClientIP(()))
    for _ in range(3):
        stand_in = SimpleNamespace(method="NONE", path="*", ctx=SimpleNamespace(), **vars(fake_request()))
        await guard.admit(stand_in)  # type: ignore[arg-type]
    request = SimpleNamespace(method="GET", path="/api/models", ctx=SimpleNamespace(), **vars(fake_request()))
    with pytest.raises(Unauthorized):  # a real request still needs its key, and has its budget
        await guard.admit(request)  # type: ignore[arg-type]
