"""
`python -m gateway`: read the settings, then serve with `WORKERS` worker processes.

Sanic's worker manager spawns the workers; each one builds the app with `create_app()` through
the `AppLoader` (a plain `app.run(workers=N)` here would leave the spawned workers without an app).
"""

from __future__ import annotations

import logging
import sys

from sanic import Sanic
from sanic.worker.loader import AppLoader

from gateway.app import create_app, load_or_exit
from gateway.patches.sanic_protocol import gateway_protocol
from gateway.process.listener import bind_port, stop_listening_at_shutdown
from gateway.process.server import raise_open_file_limit
from gateway.settings import Settings
from gateway.settings_help import parse_arguments

# Sanic's default of 100 pending connections drops bursts (1,000 clients opening streams at once
# waited a second for a retry); the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 4096
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")

logger = logging.getLogger("gateway")


def startup_line(settings: Settings) -> str:
    """What an operator needs first: where it listens, whether keys are needed, where /docs is."""
    host = settings.api_host
    reachable = "127.0.0.1" if host in _WILDCARD_HOSTS else (f"[{host}]" if ":" in host else host)
    base = f"http://{reachable}:{settings.api_port}"
    where = f"{host}:{settings.api_port}" + (" (all interfaces)" if host in _WILDCARD_HOSTS else "")
    if settings.auth_enabled:
        keys = f"API key required ({len(settings.api_keys)} configured; X-API-Key or Authorization: Bearer)"
    elif settings.api_keys:
        keys = "no API key required (AUTH_REQUIRED=false)"
    else:
        keys = "no API key required (API_KEY is empty)"
    routes = ", ".join(f"{key} ({len(urls)} replica{'s' * (len(urls) != 1)})" for key, urls in settings.routes.items())
    return (
        f"gateway listening on {where} with {settings.workers} worker{'s' * (settings.workers != 1)}; {keys}; "
        f"docs at {base}/docs; routes: {routes or 'none (set MODEL_ROUTE_<KEY>)'}"
    )


def main() -> None:
    parse_arguments()
    settings = load_or_exit()
    raise_open_file_limit()
    # The listening socket is bound here rather than by Sanic: a host or port that cannot be had
    # is one line naming the settings, not a traceback, and the socket can be closed as soon as
    # a shutdown starts (new connections refused at once, not left waiting in the backlog).
    try:
        sock = bind_port(settings.api_host, settings.api_port, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot listen on API_HOST={settings.api_host} API_PORT={settings.api_port}: {reason}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None
    stop_listening_at_shutdown(sock)
    loader = AppLoader(factory=create_app)
    app = loader.load()  # configures logging
    logger.info(startup_line(settings))
    app.prepare(
        sock=sock,
        workers=settings.workers,
        backlog=LISTEN_BACKLOG,
        access_log=False,
        motd=False,
        protocol=gateway_protocol(),
    )
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
