"""gateway/patches/sanic_config.py: the settings Sanic reads per connection read back whatever way they were set."""

from __future__ import annotations

import logging

import pytest
from sanic.config import Config
from sanic.http import Http

from gateway.app import create_app
from gateway.patches import sanic_config
from gateway.patches.sanic_config import HOT_SETTINGS, ServerConfig
from gateway.settings_loader import load_settings


def test_defaults_are_sanics() -> None:
    ours, sanics = ServerConfig(), Config()
    assert {key: getattr(ours, key) for key in HOT_SETTINGS} == {key: getattr(sanics, key) for key in HOT_SETTINGS}


def test_every_way_of_setting_a_value_is_read_back() -> None:
    config = ServerConfig()
    config.update(REQUEST_MAX_SIZE=123, KEEP_ALIVE=False)
    config.RESPONSE_TIMEOUT = 7
    config["REQUEST_TIMEOUT"] = 9
    config.update_config({"KEEP_ALIVE_TIMEOUT": 11})
    assert (config.REQUEST_MAX_SIZE, config.KEEP_ALIVE, config.RESPONSE_TIMEOUT) == (123, False, 7)
    assert (config.REQUEST_TIMEOUT, config.KEEP_ALIVE_TIMEOUT) == (9, 11)
    # The dict stays the one source: what Sanic reads with config[...] or .get() agrees.
    assert (config["REQUEST_MAX_SIZE"], config.get("RESPONSE_TIMEOUT"), config["KEEP_ALIVE_TIMEOUT"]) == (123, 7, 11)


def test_setting_the_body_limit_still_limits_the_request_head() -> None:
    try:
        ServerConfig().update(REQUEST_MAX_SIZE=6000)
        assert Http.HEADER_MAX_SIZE == 6000  # Sanic's hook after a write of REQUEST_MAX_SIZE ran
    finally:
        ServerConfig()  # a new config sets Sanic's class-wide limit back to the default


def test_environment_overrides_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANIC_KEEP_ALIVE_TIMEOUT", "42")
    monkeypatch.setenv("SANIC_KEEP_ALIVE", "false")
    config = ServerConfig()
    assert (config.KEEP_ALIVE_TIMEOUT, config.KEEP_ALIVE) == (42, False)


def test_unknown_settings_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = ServerConfig().NOT_A_SETTING


def test_the_app_reads_its_limits_from_it() -> None:
    app = create_app(load_settings({"MAX_BODY_BYTES": "2048"}, env_file=None))
    assert isinstance(app.config, ServerConfig)
    assert app.config.REQUEST_MAX_SIZE == 2048


def test_the_start_up_check_passes_on_the_installed_sanic() -> None:
    assert sanic_config.self_check() is None
    assert isinstance(sanic_config.server_config(), ServerConfig)


def test_a_sanic_whose_config_stores_settings_elsewhere_gets_its_own_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As if a release kept a setting outside the dict: the property would read a stale value.
    monkeypatch.setattr(ServerConfig, "KEEP_ALIVE_TIMEOUT", property(lambda config: 5, lambda config, value: None))
    with caplog.at_level(logging.WARNING, logger="gateway"):
        config = sanic_config.server_config()
    assert type(config) is Config
    assert "using Sanic's own" in caplog.text
