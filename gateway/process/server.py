"""
Serving with several worker processes: what the main process does before and around Sanic's
worker manager, and what each worker does once it is ready.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import resource
import signal
from collections.abc import Callable, Iterable
from typing import Any

from gateway.settings import PinWorkers

__all__ = [
    "StopSignals",
    "count_server_processes",
    "freeze_startup_heap",
    "pin_worker_to_cpu",
    "raise_open_file_limit",
]

logger = logging.getLogger("gateway")

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# Every open stream holds two sockets (client and upstream); 10,000 streams need room.
WANTED_OPEN_FILES = 65536
# Allocations between two young-generation collections (CPython's default: 700). A request
# allocates a few hundred objects and frees nearly all of them by reference counting, so the
# default runs a collection every other request for nothing.
GC_YOUNG_THRESHOLD = 10_000
# Sanic names its server processes "Sanic-Server-<number>-<restarts>"; a restart keeps the number.
_SERVER_NUMBER = re.compile(r"Sanic-Server-(\d+)-")
# How often a worker that got a stop signal while starting looks again whether it serves yet.
SERVING_RECHECK_S = 0.05


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> None:
    """Raise the soft limit on open files as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class StopSignals:
    """SIGINT and SIGTERM for a worker, taken over from Sanic once its start-up listeners run.

    Sanic registers its stop with `loop.add_signal_handler`, and uvloop hears a signal so
    registered only while the loop runs. A worker runs its loop several times while it starts,
    and a stop signal landing there went missing two ways: between two runs (uvloop only notes
    it, and nothing reads the note afterwards), or in the last step of a start-up run (the stop
    merges with that run's own end). The main process sends its SIGINT exactly then when a
    SIGTERM comes right after start-up: the worker served on, and the main process waited for it.

    Here a signal is noted whichever way it comes (through the loop, or a plain Python handler
    while the loop is not running), and the worker stops once it serves: at once, or as soon as
    `serving()` says so (Sanic sets `app.state.is_running` right before the serving run).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], Any], serving: Callable[[], bool]) -> None:
        self._loop = loop
        self._stop = stop
        self._serving = serving
        self._taken: list[int] = []
        self._requested = False
        self._stopped = False

    def take_over(self) -> bool:
        """Replace Sanic's stop registrations (first thing in `after_server_start`); False where
        Sanic registered none."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # no moment without a handler
        try:
            self._taken = [signum for signum in _STOP_SIGNALS if self._loop.remove_signal_handler(signum)]
            for signum in self._taken:
                # Replaced, not only removed: a signal the loop has not read yet comes to `_note`.
                self._loop.add_signal_handler(signum, self._note)
                signal.signal(signum, self._on_signal)
        finally:
            # Never left blocked: a worker that the supervisor started in place of a dead one was
            # spawned while the main process had them blocked (`_signals_deferred`), and a child
            # inherits its parent's signal mask. A signal that came meanwhile is handled here.
            signal.pthread_sigmask(signal.SIG_SETMASK, set(blocked) - _STOP_SIGNALS)
        return bool(self._taken)

    def shutting_down(self) -> None:
        """The worker is stopping (`before_server_stop`): a signal from now on changes nothing."""
        self._stopped = True

    def release(self) -> None:
        """Python's own handlers again (`after_server_stop`), where the process lives on after the
        server: a single-process run, a test. A worker of Sanic's manager exits right after and
        keeps ignoring a second signal, as it did under Sanic."""
        if os.environ.get("SANIC_WORKER_NAME"):
            return
        for signum in self._taken:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: Any) -> None:  # at any time, between two bytecodes
        if not self._requested and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._note)

    def _note(self) -> None:  # in the loop
        self._requested = True
        self._stop_once()

    def _stop_once(self) -> None:
        if self._stopped:
            return
        if not self._serving():  # still starting: a stop now would merge with a start-up run's end
            self._loop.call_later(SERVING_RECHECK_S, self._stop_once)
            return
        self._stopped = True
        self._stop()


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, the app, its services) out of the cyclic collector.

    Those ~60,000 objects live as long as the worker, yet each full collection walked them all:
    39 ms on a 2-core test machine, a stall for every request and stream in flight at that moment.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def count_server_processes(names: Iterable[str]) -> int:
    """How many servers Sanic's worker manager runs (`app.m.workers`), from its process names."""
    return len({number.group(1) for name in names if (number := _SERVER_NUMBER.match(name))})


def pin_worker_to_cpu(mode: PinWorkers, workers: int, worker_name: str | None = None) -> int | None:
    """Keep this worker on one CPU (`PIN_WORKERS`); the CPU, or None where the scheduler decides.

    Workers that the scheduler moves around (or puts on one CPU together, while the other runs
    something else) answer bursts later: 50 streams opened at once got their first chunk 0.5 ms
    later at the median than with each worker on a CPU of its own, at the same CPU per stream.
    "auto" pins only when there are as many workers as CPUs the process may use (the default
    `WORKERS`), so that two gateways of fewer workers each never crowd onto the same CPUs.
    Worker n gets the n-th of those CPUs, round-robin; a restarted worker gets its CPU back.
    """
    if mode == "off" or not hasattr(os, "sched_setaffinity"):
        return None
    name = os.environ.get("SANIC_WORKER_NAME", "") if worker_name is None else worker_name
    number = _SERVER_NUMBER.match(name)
    if number is None:  # not one of Sanic's server processes: a test, a single-process run
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "auto" and workers != len(cpus):
        return None
    cpu = cpus[int(number.group(1)) % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    logger.info("worker %d runs on CPU %d (PIN_WORKERS=%s)", os.getpid(), cpu, mode)
    return cpu
