"""The guard: the order of admission's checks."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sanic.compat import Header

from gateway.admission.client_ip import ClientIP
from gateway.admission.guard import Guard
from gateway.admission.ratelimit import LocalLimiter
from gateway.errors import Unauthorized
from gateway.settings import Settings


def fake_request(ip: str = "127.0.0.1", **headers: Any) -> Any:
    return SimpleNamespace(ip=ip, headers=Header({key.replace("_", "-"): value for key, value in headers.items()}))


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
