"""
What each setting means, for `python -m gateway --help`.

One entry per variable that `load_settings` reads, in the order `.env.example` lists them; the
tests hold the three together (every variable read is described here, and `.env.example` sets
each one to the default given here).
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass

__all__ = ["VARIABLES", "Variable", "parse_arguments", "render_env_example"]


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str  # as written in .env; "" where the variable is unset by default
    meaning: str
    section: str
    default_note: str = ""  # how to read an empty default, where it is not "none"
    example: str = ""  # the line .env.example has instead of `NAME=default`


_S, _R, _U, _C, _A, _M, _D = (
    "Server",
    "Routes to vLLM",
    "Upstream timeouts (seconds)",
    "Client timeouts (seconds)",
    "Access control",
    "Metrics",
    "Redis (shared rate limits and models cache across workers and machines)",
)

VARIABLES: tuple[Variable, ...] = (
    Variable("API_HOST", "0.0.0.0", "address to listen on", _S),
    Variable("API_PORT", "5050", "port to listen on; falls back to PORT", _S),
    Variable("WORKERS", "", "worker processes; falls back to WEB_CONCURRENCY", _S, "the number of CPUs"),
    Variable(
        "PIN_WORKERS",
        "auto",
        "each worker on a CPU of its own: auto (when WORKERS equals the CPUs the gateway may use), "
        "true (always, round-robin) or false (the scheduler decides)",
        _S,
    ),
    Variable("LOG_LEVEL", "INFO", "CRITICAL, ERROR, WARNING, INFO or DEBUG", _S),
    Variable("GRACEFUL_SHUTDOWN_SECONDS", "15", "seconds in-flight requests and streams may run on after SIGTERM", _S),
    Variable("MAX_BODY_BYTES", "4194304", "request bodies larger than this many bytes get 413 (4 MiB)", _S),
    Variable(
        "MODEL_ROUTE_<KEY>",
        "",
        "URL[,URL...]: route <KEY> (as written) to these vLLM base URLs (http://host:port/v1); "
        "several URLs are replicas of one route",
        _R,
        example="MODEL_ROUTE_tiny=http://127.0.0.1:8000/v1",
    ),
    Variable("VLLM_BASE_URL", "", 'a single route, key "default", used only when no MODEL_ROUTE_* is set', _R),
    Variable(
        "DEFAULT_MODEL_KEY",
        "",
        "route for requests that name no route and whose route cannot be inferred; must be a route key",
        _R,
        "the only route, when there is one",
    ),
    Variable("DEFAULT_MODEL_NAME", "", "model for requests that name none", _R),
    Variable(
        "ALLOWED_MODELS",
        "",
        "comma-separated allowlist of model ids: others get 403 and are hidden from model lists",
        _R,
        "every model",
    ),
    Variable("MODELS_CACHE_TTL_SECONDS", "10", "seconds the upstream /models lists are cached for routing", _R),
    Variable("UPSTREAM_MAX_ATTEMPTS", "3", "attempts per request over a route's replicas, the first included", _R),
    Variable("REPLICA_PROBE_INTERVAL_SECONDS", "2", "how often an ejected replica is probed to bring it back", _R),
    Variable("REPLICA_COOLDOWN_MAX_SECONDS", "30", "longest cool-down of a replica that keeps failing", _R),
    Variable(
        "ROUTING_POLICY",
        "least_outstanding",
        "how a route picks a replica: least_outstanding (least loaded), prefix (where the prompt's prefix is cached) "
        "or session (a session's requests on one replica)",
        _R,
    ),
    Variable(
        "ROUTING_POLICY_<KEY>",
        "",
        "the same for route <KEY> alone",
        _R,
        "ROUTING_POLICY",
        example="# ROUTING_POLICY_tiny=session",
    ),
    Variable(
        "PREFIX_LOAD_MARGIN",
        "6",
        "prefix: requests more than the least-loaded replica's load at which the prefix's replica gives way "
        "(in full for a prefix of 4 KB or more, in proportion below)",
        _R,
    ),
    Variable("PREFIX_INDEX_TTL_SECONDS", "300", "prefix: how long the prefix index believes an entry", _R),
    Variable("SESSION_HEADER", "X-Session-ID", "the header with a session's key (else the body's user field)", _R),
    Variable(
        "ENGINE_METRICS_INTERVAL_SECONDS",
        "0.25",
        "how often each replica's vLLM /metrics (its queue) are read, once per machine, for balancing; 0: never",
        _R,
    ),
    Variable("CONNECT_TIMEOUT_SECONDS", "5", "connecting to a vLLM server", _U),
    Variable("READ_TIMEOUT_SECONDS", "120", "waiting for vLLM's next bytes (response headers, next chunk)", _U),
    Variable("WRITE_TIMEOUT_SECONDS", "30", "sending a request body to vLLM", _U),
    Variable("TOTAL_TIMEOUT_SECONDS", "", "deadline for a whole request or stream; empty or 0 means none", _U),
    Variable("HEALTH_TIMEOUT_SECONDS", "1.5", "deadline of /health's probe of the default route (at most 1.9)", _U),
    Variable("SSE_HEARTBEAT_SECONDS", "15", 'a ": keepalive" comment after this many silent seconds of a stream', _U),
    Variable(
        "REQUEST_HEAD_TIMEOUT_SECONDS",
        "10",
        "a request head (request line and headers) must arrive whole within this, or 408",
        _C,
    ),
    Variable("REQUEST_BODY_TIMEOUT_SECONDS", "60", "a request body may pause this long between two reads, or 408", _C),
    Variable(
        "API_KEY",
        "",
        "API key(s), comma-separated for rotation; clients send X-API-Key or Authorization: Bearer",
        _A,
        "none: no authentication",
    ),
    Variable("AUTH_REQUIRED", "true", "false turns authentication off even when API_KEY is set", _A),
    Variable("ALLOW_ORIGINS", "*", "CORS: allowed browser origins, comma-separated, or *", _A),
    Variable(
        "CORS_ALLOW_HEADERS",
        "",
        "CORS: request headers browsers may send beyond the gateway's own and the OpenAI SDKs' "
        "(x-stainless-*, openai-*, ...), comma-separated, or * for any",
        _A,
    ),
    Variable("RATE_LIMIT_PER_MIN", "60", "requests per minute per client IP (0 to 10000000; 0 turns limiting off)", _A),
    Variable(
        "TRUSTED_PROXIES",
        "",
        "IPs or CIDRs of your own reverse proxies, whose X-Forwarded-For is believed (e.g. 127.0.0.1,10.0.0.0/8)",
        _A,
        "none: the client IP is the socket peer",
    ),
    Variable("PROMETHEUS_ENABLE", "true", "serve Prometheus metrics at /metrics", _M),
    Variable("METRICS_PUBLIC", "false", "let /metrics be scraped without an API key", _M),
    Variable("USE_REDIS", "false", "use Redis; without it, each machine's workers share limits in memory", _D),
    Variable("REDIS_URL", "redis://127.0.0.1:6379/0", "the Redis to use", _D),
    Variable("REDIS_PREFIX", "gateway:", "prefix of every key the gateway writes", _D),
    Variable("REDIS_CLUSTER", "false", "a Redis Cluster: REDIS_URL names any of its nodes (database 0)", _D),
    Variable(
        "REDIS_SENTINELS",
        "",
        "Redis Sentinel: the sentinels to ask where the master is, host:port, comma-separated; "
        "REDIS_URL then gives only the database and credentials",
        _D,
    ),
    Variable("REDIS_SENTINEL_MASTER", "", "the name the sentinels monitor the master by (with REDIS_SENTINELS)", _D),
)

_USAGE = """\
Serve the gateway: WORKERS worker processes behind API_HOST:API_PORT, in front of the vLLM
servers that the MODEL_ROUTE_* settings name. There are no command-line options besides --help:
settings come from the process environment, then from .env in the working directory (the
environment wins). A bad value stops start-up with one line naming it, and exit code 2."""


def _describe() -> str:
    lines: list[str] = []
    section = ""
    for variable in VARIABLES:
        if variable.section != section:
            section = variable.section
            lines += ["", f"{section}:"]
        default = variable.default or variable.default_note or "none"
        lines.append(f"  {variable.name}  (default: {default})")
        lines += textwrap.wrap(variable.meaning, width=94, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines).lstrip("\n")


_ENV_EXAMPLE_HEAD = """\
# The gateway's settings, each set to its default (`python -m gateway --help` says the same).
# `python -m gateway` reads the process environment first, then this file as `.env` in the
# working directory: a variable set in the environment wins. Empty means "not set".
# Routes have no default: MODEL_ROUTE_tiny is an example (the one `./scripts/dev.sh --fake` serves).
# Written by `python -c 'from gateway.settings_help import render_env_example as r; print(r(), end="")'`.
"""


def render_env_example() -> str:
    """The text of `.env.example`: every variable, its meaning, and its default."""
    lines = [_ENV_EXAMPLE_HEAD.rstrip("\n")]
    section = ""
    for variable in VARIABLES:
        if variable.section != section:
            section = variable.section
            lines += ["", f"# --- {section} " + "-" * max(3, 92 - len(section))]
        default = variable.default or variable.default_note or "none"
        text = f"{variable.meaning[0].upper()}{variable.meaning[1:]}. Default: {default}."
        lines += textwrap.wrap(text, width=98, initial_indent="# ", subsequent_indent="# ")
        lines.append(variable.example or f"{variable.name}={variable.default}")
    return "\n".join(lines) + "\n"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: `--help` prints every setting and exits 0; anything else is exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description=_USAGE,
        epilog=_describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse_args(argv)
