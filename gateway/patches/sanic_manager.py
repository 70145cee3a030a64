"""
The one place where the gateway changes Sanic's worker manager (`sanic.worker.manager.WorkerManager`,
Sanic 25.12; requirements.txt bounds Sanic below 26): three of its methods wrapped, and two fields
of a running manager read. Each is there for behaviour Sanic lacks, not for speed:

    defer_stop_signals()           SIGTERM/SIGINT wait until a call to the manager's state store
                                   returns (else a signal at start-up hangs the main process)
    close_first_at_shutdown(sock)  the main process's copy of the port's socket closes as soon as a
                                   shutdown starts (else new connections wait in a dead backlog)
    after_state_sync(check)        `check(manager)` runs after each state sync of the monitor loop
                                   (where dead workers are replaced: gateway/process/supervisor.py)
    is_shutting_down(manager), server_processes(manager)   what the supervisor reads

`missing()` is the self-check: the names this Sanic lacks of what these need. A patch whose
methods are missing is not applied (a warning says what is lost), and the manager runs as Sanic
ships it. Wrapping is idempotent: a second call leaves the first wrapper in place.
"""

from __future__ import annotations

import functools
import logging
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any

from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager
from sanic.worker.process import WorkerProcess

__all__ = [
    "after_state_sync",
    "close_first_at_shutdown",
    "defer_stop_signals",
    "is_shutting_down",
    "missing",
    "server_processes",
]

logger = logging.getLogger("gateway")

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# The manager's calls to its `multiprocessing.Manager` state store, during which a signal handler
# that writes to the same store would re-enter its connection.
_STATE_STORE_CALLS = ("wait_for_ack", "_sync_states", "_cleanup_non_tracked_workers")
_PROCESS_NAMES = ("restart", "is_alive", "pid", "exitcode")
_STATES = ("FAILED", "COMPLETED", "RESTARTING", "TERMINATED")
_SERVER_PREFIX = "Sanic-Server-"
_WRAPPED = "__gateway_wrapped__"


def missing(*methods: str, process_api: bool = False) -> list[str]:
    """What this Sanic lacks of the manager `methods` (and, with `process_api`, of what the
    supervisor uses of a worker process)."""
    lacking = [f"WorkerManager.{name}" for name in methods if not callable(getattr(WorkerManager, name, None))]
    if process_api:
        lacking += [f"WorkerProcess.{name}" for name in _PROCESS_NAMES if not hasattr(WorkerProcess, name)]
        lacking += [f"ProcessState.{name}" for name in _STATES if not hasattr(ProcessState, name)]
    return lacking


def _wrap(
    name: str, purpose: str, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]], lost: str,
    *, process_api: bool = False,
) -> bool:  # fmt: skip
    """Wrap `WorkerManager.<name>` for `purpose`, once; False (and a warning) where it cannot be."""
    stock = getattr(WorkerManager, name, None)
    purposes: frozenset[str] = getattr(stock, _WRAPPED, frozenset())
    if purpose in purposes:
        return True
    lacking = missing(name, process_api=process_api)
    if lacking:
        logger.warning("this Sanic lacks %s: %s", ", ".join(lacking), lost)
        return False
    wrapped = functools.wraps(stock)(wrapper(stock))  # type: ignore[arg-type]
    setattr(wrapped, _WRAPPED, purposes | {purpose})
    setattr(WorkerManager, name, wrapped)
    return True


def _signals_deferred(method: Callable[..., Any]) -> Callable[..., Any]:
    def deferred(*args: Any, **kwargs: Any) -> Any:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return method(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a deferred signal is handled here

    return deferred


def defer_stop_signals() -> None:
    """Let SIGTERM/SIGINT reach the manager only between its calls to its state store.

    The manager keeps worker states in a `multiprocessing.Manager` dict, and its signal handler
    writes to that dict too. A signal that arrives while the main thread is in the middle of a
    call to it (as it is while waiting for the workers' start-up acknowledgements) re-enters the
    same connection and hangs the main process for good (Sanic 25.12: a SIGTERM within about a
    second of start-up never exits). Blocking the two signals around those calls defers them by
    milliseconds instead, and they are handled as soon as the call returns.
    """
    for name in _STATE_STORE_CALLS:
        _wrap(name, "signals", _signals_deferred, "a stop signal right after start-up may hang the main process")


def close_first_at_shutdown(listener: socket.socket) -> None:
    """Close `listener` (the main process's copy of the port's socket) as a shutdown starts."""

    def closing_first(stop: Callable[..., Any]) -> Callable[..., Any]:
        def shutdown(manager: WorkerManager) -> None:
            listener.close()
            stop(manager)

        return shutdown

    _wrap("shutdown", "listener", closing_first, "new connections wait in the backlog until the workers have stopped")


def after_state_sync(check: Callable[[WorkerManager], None]) -> bool:
    """Run `check(manager)` after each state sync of the manager's monitor loop; False if impossible."""

    def then_check(sync: Callable[..., Any]) -> Callable[..., Any]:
        def sync_then_check(manager: WorkerManager) -> None:
            sync(manager)
            check(manager)

        return sync_then_check

    return _wrap("_sync_states", "supervisor", then_check, "a worker that dies is not replaced", process_api=True)


def is_shutting_down(manager: WorkerManager) -> bool | None:
    """Whether the running manager is stopping; None where this Sanic does not say."""
    value = getattr(manager, "_shutting_down", None)
    return None if value is None else bool(value)


def server_processes(manager: WorkerManager) -> Iterable[WorkerProcess] | None:
    """The manager's server (worker) processes; None where this Sanic does not list them."""
    processes = getattr(manager, "processes", None)
    if processes is None:
        return None
    return [process for process in list(processes) if process.name.startswith(_SERVER_PREFIX)]
