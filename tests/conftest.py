from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest
from sanic import Sanic

from gateway.admission.ratelimit import LocalLimiter
from gateway.app import create_app
from gateway.services import Services
from gateway.settings import Settings
from gateway.settings_loader import load_settings

Sanic.test_mode = True

UPSTREAM_A = "http://127.0.0.1:9101/v1"
UPSTREAM_B = "http://127.0.0.1:9102/v1"


@pytest.fixture
def settings_from() -> Callable[..., Settings]:
    """Settings from keyword variables only: no process environment, no .env file."""

    def build(**env: str) -> Settings:
        return load_settings({key: str(value) for key, value in env.items()}, env_file=None)

    return build


@pytest.fixture
def make_app(settings_from: Callable[..., Settings]) -> Iterator[Callable[..., Sanic]]:
    """A fresh app per call, configured by keyword variables (two fake routes by default)."""

    def build(**env: str) -> Sanic:
        env.setdefault("MODEL_ROUTE_a", UPSTREAM_A)
        env.setdefault("MODEL_ROUTE_b", UPSTREAM_B)
        env = {key: value for key, value in env.items() if value is not None}
        return create_app(settings_from(**env))

    yield build
    Sanic._app_registry.clear()


def worker_services(settings: Settings, transport: httpx.AsyncBaseTransport, shared_ctx: object = None) -> Services:
    """What a worker builds at start-up, over `transport`, outside any Sanic app (one process)."""
    local = LocalLimiter(settings.rate_limit_per_min) if settings.rate_limit_per_min else None
    return Services.build(
        settings, shared_ctx=shared_ctx or SimpleNamespace(), local_limiter=local, transport=transport
    )
