"""
Replacing a worker that dies: the main process's side of the worker processes.

Sanic's worker manager notices a dead server process (its monitor loop looks every 0.1 s and
marks it FAILED), but it never starts another: after the OOM killer or a segfault in a C
extension took one of two workers, the gateway served on one from then on, without a log line.
Here the manager's state sync is followed by a look at every server process (the wrapping, and
what is read of the manager, are in gateway/patches/sanic_manager.py):

- a process that died while the gateway is not stopping is logged at ERROR (its pid, and its exit
  code or signal), its Prometheus multiprocess files are marked dead (so that live gauges such as
  the open streams drop what it held), and the same Sanic process is started again: same name,
  so the same CPU (`PIN_WORKERS`) and the same slot in the machine's shared tables;
- a worker that keeps dying soon after it started waits before each new start, longer each time
  (`RestartBackoff`), so a crash loop costs a start every 30 s at most, not a core;
- the replacement counts itself in `gateway_worker_restarts_total` when it starts
  (`REPLACES_ENV` tells it which pid it replaces).

Where the Sanic it runs on lacks what this relies on, the manager is left as it is, with a warning.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager
from sanic.worker.process import WorkerProcess

from gateway.patches.sanic_manager import after_state_sync, is_shutting_down, server_processes

__all__ = ["REPLACES_ENV", "RestartBackoff", "WorkerSupervisor", "supervise_workers"]

logger = logging.getLogger("gateway")

# Set in the main process's environment around a replacement's start, so that it inherits it.
REPLACES_ENV = "GATEWAY_WORKER_REPLACES"


@dataclass
class RestartBackoff:
    """How long a dead worker waits before its next start.

    A first death is replaced at once. A replacement that dies again within `stable_seconds` of
    its start waits `first_seconds`, and each further such death doubles that, up to
    `max_seconds`; a worker that then lives `stable_seconds` starts the count afresh.
    """

    first_seconds: float = 0.5
    max_seconds: float = 30.0
    stable_seconds: float = 30.0
    _quick_deaths: dict[str, int] = field(default_factory=dict)

    def delay(self, name: str, lived_seconds: float) -> float:
        # A death after a stable life begins a new streak; one soon after a start extends it.
        quick = 1 if lived_seconds >= self.stable_seconds else self._quick_deaths.get(name, 0) + 1
        self._quick_deaths[name] = quick
        if quick == 1:  # the first death of a streak: replaced at once
            return 0.0
        return min(self.max_seconds, self.first_seconds * 2 ** (quick - 2))


@dataclass
class _Watched:
    pid: int | None
    seen_alive_at: float
    restart_at: float | None = None  # set while a dead worker waits for its replacement


class WorkerSupervisor:
    """Restarts dead server processes of one `WorkerManager`; `check` runs in its monitor loop."""

    def __init__(
        self,
        backoff: RestartBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        mark_dead: Callable[[int], None] | None = None,
    ) -> None:
        self.backoff = backoff or RestartBackoff()
        self._clock = clock
        self._mark_dead = mark_dead or _mark_metrics_dead
        self._watched: dict[str, _Watched] = {}
        self.restarts = 0
        self._usable: bool | None = None

    def check(self, manager: WorkerManager) -> None:
        shutting_down, processes = is_shutting_down(manager), server_processes(manager)
        if self._usable is None:  # decided on the first look at a running manager
            lacking = [
                f"WorkerManager.{name}"
                for name, value in (("_shutting_down", shutting_down), ("processes", processes))
                if value is None
            ]
            self._usable = not lacking
            if lacking:
                logger.warning("this Sanic lacks %s: a worker that dies is not replaced", ", ".join(lacking))
        if not self._usable or shutting_down or processes is None:  # a worker that stops now is meant to
            return
        now = self._clock()
        for process in processes:
            self._check_process(process, now)

    def _check_process(self, process: WorkerProcess, now: float) -> None:
        watched = self._watched.get(process.name)
        if watched is None or (watched.restart_at is None and watched.pid != process.pid):
            watched = self._watched[process.name] = _Watched(process.pid, now)
        if process.state in (ProcessState.RESTARTING, ProcessState.TERMINATED) or process.is_alive():
            return
        if watched.restart_at is None:  # just died
            delay = self.backoff.delay(process.name, now - watched.seen_alive_at)
            watched.restart_at = now + delay
            logger.error(
                "worker %s (pid %s) died (%s); %s",
                process.name,
                watched.pid,
                _describe_exit(process.exitcode),
                f"a replacement starts in {delay:g} s (it died again soon after it started)"
                if delay
                else "a replacement starts now",
            )
            if watched.pid is not None:
                self._mark_dead(watched.pid)
        if now >= watched.restart_at:
            self._replace(process, watched.pid)
            self._watched[process.name] = _Watched(process.pid, self._clock())

    def _replace(self, process: WorkerProcess, dead_pid: int | None) -> None:
        os.environ[REPLACES_ENV] = str(dead_pid or "")
        try:
            process.restart()
        finally:
            os.environ.pop(REPLACES_ENV, None)
        self.restarts += 1
        logger.warning("worker %s (pid %s) started in place of pid %s", process.name, process.pid, dead_pid)


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _mark_metrics_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def supervise_workers(supervisor: WorkerSupervisor | None = None) -> bool:
    """Have Sanic's worker manager replace dead workers; False where this Sanic does not allow it."""
    return after_state_sync((supervisor or WorkerSupervisor()).check)
