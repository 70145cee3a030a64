"""
The routing settings, parsed and checked: `MODEL_ROUTE_<KEY>` (a route and its replicas),
`VLLM_BASE_URL` (the one route of older set-ups), `ROUTING_POLICY` and `ROUTING_POLICY_<KEY>` (how
a route picks a replica), `SESSION_HEADER` (where the `session` policy finds a session's key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from gateway.settings import HEADER_NAME, ROUTING_POLICIES, RoutingPolicy, SettingsError

__all__ = ["LEGACY_ROUTE_KEY", "ROUTE_PREFIX", "base_url", "routes_of", "routing_policies", "session_header"]

ROUTE_PREFIX = "MODEL_ROUTE_"
POLICY_PREFIX = "ROUTING_POLICY_"
LEGACY_ROUTE_KEY = "default"


def base_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number from 0 to 65535
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise SettingsError(f"{name}={value!r}: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1")
    return value.rstrip("/")


def routes_of(values: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    routes: dict[str, tuple[str, ...]] = {}
    for name in sorted(values):
        if not name.startswith(ROUTE_PREFIX) or not values[name].strip():
            continue
        key = name[len(ROUTE_PREFIX) :]
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise SettingsError(f"{name}: expected a route key of letters, digits, '_', '-' or '.'")
        urls = tuple(base_url(name, url.strip()) for url in values[name].split(",") if url.strip())
        if len(set(urls)) != len(urls):
            raise SettingsError(f"{name}={values[name]!r}: expected distinct replica URLs")
        routes[key] = urls
    if not routes and values.get("VLLM_BASE_URL", "").strip():
        routes[LEGACY_ROUTE_KEY] = (base_url("VLLM_BASE_URL", values["VLLM_BASE_URL"].strip()),)
    return routes


def _policy(name: str, value: str) -> RoutingPolicy:
    lowered = value.strip().lower()
    for policy in ROUTING_POLICIES:
        if lowered == policy:
            return policy
    raise SettingsError(f"{name}={value!r}: expected one of {', '.join(ROUTING_POLICIES)}")


def routing_policies(
    values: Mapping[str, str], routes: Mapping[str, object], default: str | None
) -> dict[str, RoutingPolicy]:
    """The routes whose policy is not least_outstanding: `ROUTING_POLICY_<KEY>`, else `ROUTING_POLICY` (`default`)."""
    fallback = _policy("ROUTING_POLICY", default) if default else "least_outstanding"
    chosen: dict[str, RoutingPolicy] = {}
    for name in sorted(values):
        if name.startswith(POLICY_PREFIX) and values[name].strip():
            key = name[len(POLICY_PREFIX) :]
            if key not in routes:
                known = ", ".join(routes) or "none configured"
                raise SettingsError(f"{name}: expected the key of a route (MODEL_ROUTE_<KEY>: {known})")
            chosen[key] = _policy(name, values[name])
    every = {key: chosen.get(key, fallback) for key in routes}
    return {key: policy for key, policy in every.items() if policy != "least_outstanding"}


def session_header(value: str | None) -> str:
    """`SESSION_HEADER`: the header that carries a session's key (default X-Session-ID)."""
    if value is None:
        return "x-session-id"
    if not HEADER_NAME.fullmatch(value):
        raise SettingsError(f"SESSION_HEADER={value!r}: expected a header name, such as X-Session-ID")
    return value.lower()
