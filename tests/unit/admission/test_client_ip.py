"""The client IP: X-Forwarded-For read only past TRUSTED_PROXIES."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sanic.compat import Header

from gateway.admission.client_ip import ClientIP, parse_networks


def fake_request(ip: str = "127.0.0.1", **headers: Any) -> Any:
    return SimpleNamespace(ip=ip, headers=Header({key.replace("_", "-"): value for key, value in headers.items()}))


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
