from __future__ import annotations

import logging

import pytest
from sanic.http import Http
from sanic.server.protocols.http_protocol import HttpProtocol

from gateway.patches.sanic_protocol import GatewayHttpProtocol, gateway_protocol


def test_the_gateway_protocol_is_used_on_the_sanic_it_was_written_for() -> None:
    assert gateway_protocol() is GatewayHttpProtocol


def test_a_sanic_without_the_overridden_internals_gets_its_own_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(Http, "http1_request_header")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert gateway_protocol() is HttpProtocol
    assert "lacks http1_request_header" in caplog.text
    assert "REQUEST_HEAD_TIMEOUT_SECONDS" in caplog.text
