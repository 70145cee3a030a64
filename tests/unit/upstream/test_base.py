"""The transport seam's value types: a URL parsed once into a Target, timeouts per phase."""

from __future__ import annotations

import pytest

from gateway.upstream.base import Target, Timeouts


def test_a_target_holds_what_the_request_line_and_the_connection_need() -> None:
    target = Target.parse("http://user:pw@127.0.0.1:8001/v1/chat/completions?a=1&b=2")
    assert (target.scheme, target.host, target.port) == ("http", "127.0.0.1", 8001)
    assert target.netloc == b"127.0.0.1:8001"  # the Host header carries no credentials
    assert target.path == b"/v1/chat/completions?a=1&b=2"


@pytest.mark.parametrize(
    ("url", "port", "path"),
    [("http://vllm/v1", 80, b"/v1"), ("https://vllm", 443, b"/"), ("http://[::1]:9/x", 9, b"/x")],
)
def test_default_ports_and_paths(url: str, port: int, path: bytes) -> None:
    target = Target.parse(url)
    assert (target.port, target.path) == (port, path)


def test_a_relative_url_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Target.parse("/v1/models")


def test_timeouts_default_to_none_per_phase() -> None:
    assert Timeouts() == Timeouts(connect=None, read=None, write=None)
    assert Timeouts(read=2.0).read == 2.0
