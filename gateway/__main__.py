"""
`python -m gateway`: read the settings, then serve with `WORKERS` worker processes.

Sanic's worker manager spawns the workers; each one builds the app with `create_app()` through
the `AppLoader` (a plain `app.run(workers=N)` here would leave the spawned workers without an app).
"""

from __future__ import annotations

from sanic import Sanic
from sanic.worker.loader import AppLoader

from .app import create_app, load_or_exit
from .server import raise_open_file_limit

LISTEN_BACKLOG = 4096


def main() -> None:
    settings = load_or_exit()
    raise_open_file_limit()
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.workers,
        # Sanic's default of 100 pending connections drops bursts (1,000 clients opening streams
        # at once waited a second for a retry); the kernel caps this at net.core.somaxconn.
        backlog=LISTEN_BACKLOG,
        access_log=False,
        motd=False,
    )
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
