"""
`python -m gateway`: read the settings, then serve with `WORKERS` worker processes.

Sanic's worker manager spawns the workers; each one builds the app with `create_app()` through
the `AppLoader` (a plain `app.run(workers=N)` here would leave the spawned workers without an app).
"""

from __future__ import annotations

import sys

from sanic import Sanic
from sanic.worker.loader import AppLoader

from .app import create_app, load_or_exit
from .listener import bind_port, stop_listening_at_shutdown
from .sanic_protocol import GatewayHttpProtocol
from .server import raise_open_file_limit

# Sanic's default of 100 pending connections drops bursts (1,000 clients opening streams at once
# waited a second for a retry); the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 4096


def main() -> None:
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
    app = loader.load()
    app.prepare(
        sock=sock,
        workers=settings.workers,
        backlog=LISTEN_BACKLOG,
        access_log=False,
        motd=False,
        protocol=GatewayHttpProtocol,
    )
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
