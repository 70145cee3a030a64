"""The one place where Sanic's worker manager is changed: each wrap once, or not at all, said so."""

from __future__ import annotations

import inspect
import logging
import signal
import socket

import pytest
from sanic.worker.manager import WorkerManager

from gateway.patches import sanic_manager


@pytest.fixture(autouse=True)
def stock_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from Sanic's own methods, and leaves them as they were."""
    for name in ("wait_for_ack", "_sync_states", "_cleanup_non_tracked_workers", "shutdown"):
        monkeypatch.setattr(WorkerManager, name, inspect.unwrap(getattr(WorkerManager, name)))


def test_a_stop_signal_waits_until_a_call_to_the_state_store_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    blocked: list[bool] = []
    monkeypatch.setattr(
        WorkerManager,
        "wait_for_ack",
        lambda self: blocked.append(signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())),
    )
    sanic_manager.defer_stop_signals()
    WorkerManager.wait_for_ack(object())  # type: ignore[arg-type]
    assert blocked == [True]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # and unblocked after


def test_the_listener_closes_before_the_manager_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    seen: list[int] = []
    monkeypatch.setattr(WorkerManager, "shutdown", lambda self: seen.append(listener.fileno()))
    sanic_manager.close_first_at_shutdown(listener)
    WorkerManager.shutdown(object())  # type: ignore[arg-type]
    assert seen == [-1]  # closed when Sanic's own shutdown ran


def test_two_purposes_wrap_the_same_method_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(WorkerManager, "_sync_states", lambda self: calls.append("sync"))
    sanic_manager.defer_stop_signals()
    assert sanic_manager.after_state_sync(lambda manager: calls.append("check"))
    assert sanic_manager.after_state_sync(lambda manager: calls.append("again"))  # already there: kept
    sanic_manager.defer_stop_signals()
    WorkerManager._sync_states(object())  # type: ignore[arg-type]
    assert calls == ["sync", "check"]


def test_a_sanic_without_the_method_is_left_alone_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(WorkerManager, "_sync_states")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert sanic_manager.after_state_sync(lambda manager: None) is False
    assert "lacks WorkerManager._sync_states: a worker that dies is not replaced" in caplog.text
    assert not hasattr(WorkerManager, "_sync_states")


def test_what_the_supervisor_reads_of_a_running_manager() -> None:
    class Process:
        def __init__(self, name: str) -> None:
            self.name = name

    class Manager:
        def __init__(self) -> None:
            self._shutting_down = False
            self.processes = [Process("Sanic-Server-0-0"), Process("Sanic-Main"), Process("Sanic-Server-1-0")]

    manager = Manager()
    assert sanic_manager.is_shutting_down(manager) is False  # type: ignore[arg-type]
    assert [p.name for p in sanic_manager.server_processes(manager)] == ["Sanic-Server-0-0", "Sanic-Server-1-0"]  # type: ignore[arg-type, union-attr]
    assert sanic_manager.is_shutting_down(object()) is None  # type: ignore[arg-type]
    assert sanic_manager.server_processes(object()) is None  # type: ignore[arg-type]
