"""
`python -m gateway`: read the settings, then serve with `WORKERS` worker processes.

Sanic's worker manager spawns the workers; each one builds the app with `create_app()` through
the `AppLoader` (a plain `app.run(workers=N)` here would leave the spawned workers without an app).
"""

from __future__ import annotations

import resource

from sanic import Sanic
from sanic.worker.loader import AppLoader

from .app import create_app, load_or_exit

# Every open stream holds two sockets (client and upstream); 10,000 streams need room.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    settings = load_or_exit()
    raise_open_file_limit()
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=settings.api_host, port=settings.api_port, workers=settings.workers, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
