"""API keys: either header, any configured key, 401 otherwise."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sanic.compat import Header

from gateway.admission.auth import ApiKeyAuth
from gateway.errors import Unauthorized


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
