"""The routing settings: routes, their policies, and the session header."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError
from gateway.settings_loader import load_settings

ROUTES = {
    "MODEL_ROUTE_chat": "http://127.0.0.1:8001/v1,http://127.0.0.1:8002/v1",
    "MODEL_ROUTE_embed": "http://127.0.0.1:8003/v1",
}


def test_every_route_is_least_outstanding_unless_told_otherwise() -> None:
    settings = load_settings(ROUTES, env_file=None)
    assert settings.routing_policy("chat") == settings.routing_policy("embed") == "least_outstanding"
    assert settings.session_header == "x-session-id"


def test_one_policy_for_all_and_another_for_one_route() -> None:
    settings = load_settings(
        {
            **ROUTES,
            "ROUTING_POLICY": "Session",
            "ROUTING_POLICY_embed": "least_outstanding",
            "SESSION_HEADER": "X-Conv",
        },
        env_file=None,
    )
    assert (settings.routing_policy("chat"), settings.routing_policy("embed")) == ("session", "least_outstanding")
    assert settings.session_header == "x-conv"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"ROUTING_POLICY": "prefix-ish"},
            "ROUTING_POLICY='prefix-ish': expected one of least_outstanding, prefix, session",
        ),
        (
            {"ROUTING_POLICY_chta": "session"},
            "ROUTING_POLICY_chta: expected the key of a route (MODEL_ROUTE_<KEY>: chat, embed)",
        ),
        ({"SESSION_HEADER": "x conv"}, "SESSION_HEADER='x conv': expected a header name"),
    ],
)
def test_a_bad_routing_setting_names_itself(extra: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**ROUTES, **extra}, env_file=None)
    assert str(caught.value).startswith(message)
