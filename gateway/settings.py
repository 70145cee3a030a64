"""
The gateway's settings: one frozen object, built once per process by `load_settings()`
(`gateway/settings_loader.py`: the environment over `.env`, every value parsed and checked).
What each variable means is in `gateway/settings_help.py` and `.env.example`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HEADER_NAME", "ROUTING_POLICIES", "PinWorkers", "RoutingPolicy", "Settings", "SettingsError"]

PinWorkers = Literal["auto", "on", "off"]
RoutingPolicy = Literal["least_outstanding", "prefix", "session"]
ROUTING_POLICIES: tuple[RoutingPolicy, ...] = ("least_outstanding", "prefix", "session")
# What a setting that names an HTTP header must match (a token, RFC 9110).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use. The message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be configured with. See `.env.example` for each meaning."""

    api_host: str = "0.0.0.0"
    api_port: int = 5050
    workers: int = 1
    # "auto": one CPU per worker when there are as many workers as CPUs; "on"; "off".
    pin_workers: PinWorkers = "auto"
    log_level: str = "INFO"

    # Routing: route key -> base URLs of its replicas (each ending in `/v1` or similar).
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_model_key: str | None = None
    default_model_name: str | None = None
    allowed_models: frozenset[str] | None = None
    models_cache_ttl_seconds: float = 10.0
    upstream_max_attempts: int = 3
    replica_probe_interval_seconds: float = 2.0
    replica_cooldown_max_seconds: float = 30.0
    # Route key -> how its replicas are picked (`gateway/routing/policies.py`), for every route.
    routing_policies: Mapping[str, RoutingPolicy] = field(default_factory=dict)
    session_header: str = "x-session-id"  # lower-cased
    engine_metrics_interval_seconds: float = 0.25  # 0: vLLM's /metrics are not read
    # `prefix`: the load beyond the least-loaded replica's at which a prefix's replica gives way,
    # and how long the index believes an entry.
    prefix_load_margin: float = 6.0
    prefix_index_ttl_seconds: float = 300.0

    # Upstream timeouts; `total_timeout_seconds` None means no overall deadline.
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0
    write_timeout_seconds: float = 30.0
    total_timeout_seconds: float | None = None
    health_timeout_seconds: float = 1.5

    # A client's request head must arrive whole within this (from its first byte); its body may
    # pause this long between two reads.
    request_head_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 60.0

    sse_heartbeat_seconds: float = 15.0
    max_body_bytes: int = 4 * 1024 * 1024
    graceful_shutdown_seconds: float = 15.0

    # Access control and operations.
    api_keys: tuple[str, ...] = ()
    auth_required: bool = True
    allow_origins: tuple[str, ...] = ("*",)
    cors_allow_headers: tuple[str, ...] = ()  # beyond the gateway's and the OpenAI SDKs' own
    rate_limit_per_min: int = 60
    trusted_proxies: tuple[str, ...] = ()
    prometheus_enable: bool = True
    metrics_public: bool = False

    use_redis: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "gateway:"
    # A Redis Cluster (`redis_url` names any node), or a master found through Sentinel; not both.
    redis_cluster: bool = False
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None

    def routing_policy(self, route_key: str) -> RoutingPolicy:
        return self.routing_policies.get(route_key, "least_outstanding")

    @property
    def auth_enabled(self) -> bool:
        return self.auth_required and bool(self.api_keys)

    @property
    def fallback_route_key(self) -> str | None:
        """The route used when nothing else decides: `DEFAULT_MODEL_KEY`, or the only route."""
        if self.default_model_key is not None:
            return self.default_model_key
        if len(self.routes) == 1:
            return next(iter(self.routes))
        return None

    @property
    def health_route_key(self) -> str | None:
        """The route `/health` probes: the default route, else the first one configured."""
        return self.default_model_key or next(iter(self.routes), None)
