"""
`load_settings()`: the gateway's `Settings`, read from the process environment first, then from
a `.env` file in the working directory (the environment wins, as with starlette's `Config`).
Every value is parsed and checked here, so a bad value stops start-up with one line that names
the variable:

    >>> load_settings({"API_PORT": "http"})
    Traceback (most recent call last):
    SettingsError: API_PORT='http': expected an integer from 1 to 65535
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.settings import HEADER_NAME, PinWorkers, Settings, SettingsError
from gateway.settings_routes import routes_of, routing_policies, session_header

__all__ = ["SettingsError", "load_settings", "read_env_file"]

T = TypeVar("T")
N = TypeVar("N", int, float)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read `KEY=VALUE` lines; `#` comments, blank lines, `export ` and quotes are allowed."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


class _Reader:
    """Typed look-ups over the environment, then `.env`, raising `SettingsError` with the name."""

    def __init__(self, *layers: Mapping[str, str]) -> None:
        self.layers = layers  # the first wins

    def raw(self, *names: str) -> tuple[str, str] | None:
        """The first of `names` set to a non-empty value, with that name.

        Layer by layer: a fallback name set in the environment (`PORT`, as a platform sets it)
        beats the preferred name set in `.env` (`API_PORT=5050`, as copied from .env.example).
        """
        for layer in self.layers:
            for name in names:
                value = layer.get(name, "").strip()
                if value:
                    return name, value
        return None

    def get(self, names: str | tuple[str, ...], cast: Callable[[str], T], default: T, expected: str) -> T:
        found = self.raw(*((names,) if isinstance(names, str) else names))
        if found is None:
            return default
        name, value = found
        try:
            return cast(value)
        except (ValueError, TypeError):
            raise SettingsError(f"{name}={value!r}: expected {expected}") from None

    def text(self, name: str, default: str | None = None) -> str | None:
        found = self.raw(name)
        return found[1] if found else default

    def csv(self, name: str) -> tuple[str, ...]:
        found = self.raw(name)
        if found is None:
            return ()
        return tuple(item.strip() for item in found[1].split(",") if item.strip())


def _auto_or_boolean(value: str) -> PinWorkers:
    if value.lower() == "auto":
        return "auto"
    return "on" if _boolean(value) else "off"


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(value)


def _ranged(kind: Callable[[str], N], low: float, high: float) -> Callable[[str], N]:
    def cast(value: str) -> N:
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(value)
        return number

    return cast


def _sentinels(value: str | None) -> tuple[tuple[str, int], ...]:
    """`REDIS_SENTINELS`: host:port pairs, comma-separated ([v6]:port for IPv6 addresses)."""
    sentinels = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingsError(
                f"REDIS_SENTINELS={item!r}: expected host:port pairs, comma-separated, such as 10.0.0.1:26379,10.0.0.2:26379"
            )
        sentinels.append((host, int(port)))
    return tuple(sentinels)


def _redis_topology(env: _Reader, redis_url: str, cluster: bool, sentinels: tuple[tuple[str, int], ...]) -> str | None:
    """Check that the Redis settings describe one way to reach Redis; the Sentinel master's name."""
    master = env.text("REDIS_SENTINEL_MASTER")
    listed = env.text("REDIS_SENTINELS")
    if cluster and sentinels:
        raise SettingsError(
            f"REDIS_SENTINELS={listed!r}: expected either it or REDIS_CLUSTER=true, not both (a cluster fails over itself)"
        )
    if sentinels and master is None:
        raise SettingsError(
            f"REDIS_SENTINELS={listed!r}: expected REDIS_SENTINEL_MASTER too, the name the sentinels monitor the master by"
        )
    if master is not None and not sentinels:
        raise SettingsError(f"REDIS_SENTINEL_MASTER={master!r}: expected REDIS_SENTINELS too, the sentinels to ask")
    parts = urlsplit(redis_url)
    if cluster and (parts.scheme == "unix" or parts.path.strip("/") not in ("", "0")):
        raise SettingsError(
            f"REDIS_URL={redis_url!r}: expected the redis:// or rediss:// URL of a cluster node, with database 0"
            " (a cluster has no other), as REDIS_CLUSTER=true"
        )
    if sentinels and parts.scheme == "unix":
        raise SettingsError(
            f"REDIS_URL={redis_url!r}: expected a redis:// or rediss:// URL with REDIS_SENTINELS"
            " (its database and credentials are used; the sentinels give the address)"
        )
    return master


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = ".env"
) -> Settings:
    """Build the settings from `environ` (default: `os.environ`) over the `env_file` values."""
    file_values = read_env_file(env_file) if env_file else {}
    environment = os.environ if environ is None else environ
    values = {**file_values, **environment}
    env = _Reader(environment, file_values)

    def seconds(name: str, default: float, low: float = 0.001, high: float = 86400.0) -> float:
        return env.get(name, _ranged(float, low, high), default, f"a number of seconds from {low:g} to {high:g}")

    routes = routes_of(values)
    default_model_key = env.text("DEFAULT_MODEL_KEY")
    if default_model_key is not None and default_model_key not in routes:
        known = ", ".join(routes) or "none configured"
        raise SettingsError(f"DEFAULT_MODEL_KEY={default_model_key!r}: expected one of the route keys ({known})")
    allowed = env.csv("ALLOWED_MODELS")
    total = seconds("TOTAL_TIMEOUT_SECONDS", 0.0, low=0.0)
    log_level = (env.text("LOG_LEVEL") or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL={log_level!r}: expected one of {', '.join(_LOG_LEVELS)}")
    trusted_proxies = env.csv("TRUSTED_PROXIES")
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(
                f"TRUSTED_PROXIES={proxy!r}: expected IP addresses or CIDR networks, such as 127.0.0.1,10.0.0.0/8"
            ) from None
    cors_allow_headers = env.csv("CORS_ALLOW_HEADERS")
    for name in cors_allow_headers:
        if name != "*" and not HEADER_NAME.fullmatch(name):
            raise SettingsError(f"CORS_ALLOW_HEADERS={name!r}: expected header names, such as x-my-header, or *")
    redis_url = env.text("REDIS_URL", Settings.redis_url) or Settings.redis_url
    if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(f"REDIS_URL={redis_url!r}: expected a redis://, rediss:// or unix:// URL")
    redis_cluster = env.get("REDIS_CLUSTER", _boolean, False, "true or false")
    redis_sentinels = _sentinels(env.text("REDIS_SENTINELS"))
    redis_sentinel_master = _redis_topology(env, redis_url, redis_cluster, redis_sentinels)

    return Settings(
        api_host=env.text("API_HOST", Settings.api_host) or Settings.api_host,
        api_port=int(env.get(("API_PORT", "PORT"), _ranged(int, 1, 65535), 5050, "an integer from 1 to 65535")),
        workers=int(
            env.get(
                ("WORKERS", "WEB_CONCURRENCY"), _ranged(int, 1, 512), os.cpu_count() or 1, "an integer from 1 to 512"
            )
        ),
        pin_workers=env.get("PIN_WORKERS", _auto_or_boolean, "auto", "auto, true or false"),
        log_level=log_level,
        routes=routes,
        routing_policies=routing_policies(values, routes, env.text("ROUTING_POLICY")),
        session_header=session_header(env.text("SESSION_HEADER")),
        engine_metrics_interval_seconds=seconds("ENGINE_METRICS_INTERVAL_SECONDS", 0.25, low=0.0, high=60.0),
        prefix_load_margin=env.get(
            "PREFIX_LOAD_MARGIN", _ranged(float, 0.0, 1e6), 6.0, "a number of requests from 0 to 1000000"
        ),
        prefix_index_ttl_seconds=seconds("PREFIX_INDEX_TTL_SECONDS", 300.0, low=1.0, high=86400.0),
        default_model_key=default_model_key,
        default_model_name=env.text("DEFAULT_MODEL_NAME"),
        allowed_models=frozenset(allowed) if allowed else None,
        models_cache_ttl_seconds=seconds("MODELS_CACHE_TTL_SECONDS", 10.0),
        upstream_max_attempts=int(
            env.get("UPSTREAM_MAX_ATTEMPTS", _ranged(int, 1, 10), 3, "a whole number of attempts from 1 to 10")
        ),
        replica_probe_interval_seconds=seconds("REPLICA_PROBE_INTERVAL_SECONDS", 2.0, low=0.05, high=3600.0),
        replica_cooldown_max_seconds=seconds("REPLICA_COOLDOWN_MAX_SECONDS", 30.0, low=0.05, high=86400.0),
        connect_timeout_seconds=seconds("CONNECT_TIMEOUT_SECONDS", 5.0),
        read_timeout_seconds=seconds("READ_TIMEOUT_SECONDS", 120.0),
        write_timeout_seconds=seconds("WRITE_TIMEOUT_SECONDS", 30.0),
        total_timeout_seconds=total or None,
        health_timeout_seconds=seconds("HEALTH_TIMEOUT_SECONDS", 1.5, high=1.9),
        request_head_timeout_seconds=seconds("REQUEST_HEAD_TIMEOUT_SECONDS", 10.0, low=0.05, high=3600.0),
        request_body_timeout_seconds=seconds("REQUEST_BODY_TIMEOUT_SECONDS", 60.0, low=0.05, high=3600.0),
        sse_heartbeat_seconds=seconds("SSE_HEARTBEAT_SECONDS", 15.0, low=0.05, high=3600.0),
        max_body_bytes=int(
            env.get(
                "MAX_BODY_BYTES", _ranged(int, 1024, 1 << 30), 4 * 1024 * 1024, "a byte count from 1024 to 1073741824"
            )
        ),
        graceful_shutdown_seconds=seconds("GRACEFUL_SHUTDOWN_SECONDS", 15.0, low=0.0),
        api_keys=env.csv("API_KEY"),
        auth_required=env.get("AUTH_REQUIRED", _boolean, True, "true or false"),
        allow_origins=env.csv("ALLOW_ORIGINS") or Settings.allow_origins,
        cors_allow_headers=cors_allow_headers,
        rate_limit_per_min=int(
            env.get(
                "RATE_LIMIT_PER_MIN",
                _ranged(int, 0, 10_000_000),
                60,
                "a whole number of requests from 0 to 10000000 (0 turns limiting off)",
            )
        ),
        trusted_proxies=trusted_proxies,
        prometheus_enable=env.get("PROMETHEUS_ENABLE", _boolean, True, "true or false"),
        metrics_public=env.get("METRICS_PUBLIC", _boolean, False, "true or false"),
        use_redis=env.get("USE_REDIS", _boolean, False, "true or false"),
        redis_url=redis_url,
        redis_prefix=env.text("REDIS_PREFIX", Settings.redis_prefix) or Settings.redis_prefix,
        redis_cluster=redis_cluster,
        redis_sentinels=redis_sentinels,
        redis_sentinel_master=redis_sentinel_master,
    )
