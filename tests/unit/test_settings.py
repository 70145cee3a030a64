"""gateway/settings.py: the frozen Settings object, and what its derived values decide."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.settings import Settings

ROUTES = {"chat": ("http://127.0.0.1:8101/v1",), "embed": ("http://127.0.0.1:8102/v1",)}


def test_settings_cannot_change_once_built() -> None:
    # Every worker reads the same object; a request cannot change what the next one sees.
    settings = Settings(api_keys=("k",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.api_keys = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("api_keys", "auth_required", "enabled"),
    [(("k",), True, True), (("k",), False, False), ((), True, False)],
)
def test_keys_are_asked_for_only_when_some_are_set_and_required(
    api_keys: tuple[str, ...], auth_required: bool, enabled: bool
) -> None:
    assert Settings(api_keys=api_keys, auth_required=auth_required).auth_enabled is enabled


def test_a_request_naming_no_route_goes_to_the_default_route_else_the_only_one() -> None:
    assert Settings(routes=ROUTES, default_model_key="embed").fallback_route_key == "embed"
    assert Settings(routes={"chat": ROUTES["chat"]}).fallback_route_key == "chat"
    assert Settings(routes=ROUTES).fallback_route_key is None  # two routes, no default: the model decides
    assert Settings().fallback_route_key is None


def test_health_probes_the_default_route_else_the_first_configured() -> None:
    assert Settings(routes=ROUTES, default_model_key="embed").health_route_key == "embed"
    assert Settings(routes=ROUTES).health_route_key == "chat"
    assert Settings().health_route_key is None
