from __future__ import annotations

import logging
from typing import Any

import pytest
from sanic.worker.constants import ProcessState
from sanic.worker.manager import WorkerManager

from gateway.process import supervisor as supervisor_module
from gateway.process.supervisor import REPLACES_ENV, RestartBackoff, WorkerSupervisor, supervise_workers


def test_a_first_death_is_replaced_at_once_and_a_crash_loop_backs_off_to_a_cap() -> None:
    backoff = RestartBackoff(first_seconds=0.5, max_seconds=30, stable_seconds=30)
    delays = [backoff.delay("Sanic-Server-0-0", lived_seconds=1) for _ in range(9)]
    assert delays == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    # Each worker has its own count, and one that served a while starts afresh.
    assert backoff.delay("Sanic-Server-1-0", lived_seconds=1) == 0
    assert backoff.delay("Sanic-Server-0-0", lived_seconds=60) == 0
    assert backoff.delay("Sanic-Server-0-0", lived_seconds=1) == 0.5


class FakeProcess:
    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        self.state = ProcessState.ACKED
        self.alive = True
        self.exitcode: int | None = None
        self.started_with: list[str | None] = []

    def is_alive(self) -> bool:
        return self.alive

    def die(self, exitcode: int) -> None:
        self.alive, self.exitcode, self.state = False, exitcode, ProcessState.FAILED

    def restart(self) -> None:
        import os

        self.started_with.append(os.environ.get(REPLACES_ENV))
        self.pid += 100
        self.alive, self.exitcode, self.state = True, None, ProcessState.STARTED


class FakeManager:
    def __init__(self, *processes: FakeProcess) -> None:
        self.processes = list(processes)
        self._shutting_down = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, dead: list[int]) -> WorkerSupervisor:
    return WorkerSupervisor(RestartBackoff(stable_seconds=30), clock=clock, mark_dead=dead.append)


def test_a_dead_server_process_is_logged_marked_dead_and_restarted_with_its_pid_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, dead = Clock(), []
    worker = FakeProcess("Sanic-Server-1-0", pid=41)
    other = FakeProcess("Sanic-Server-0-0", pid=40)
    manager: Any = FakeManager(other, worker)
    supervisor = make(clock, dead)
    supervisor.check(manager)  # both alive: nothing to do
    clock.now += 60
    worker.die(-9)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        supervisor.check(manager)
    assert "worker Sanic-Server-1-0 (pid 41) died (killed by SIGKILL); a replacement starts now" in caplog.text
    assert dead == [41]
    assert worker.started_with == ["41"] and worker.is_alive() and worker.pid == 141
    assert other.started_with == [] and supervisor.restarts == 1


def test_a_quick_second_death_waits_for_its_back_off() -> None:
    clock, dead = Clock(), []
    worker = FakeProcess("Sanic-Server-0-0", pid=7)
    manager: Any = FakeManager(worker)
    supervisor = make(clock, dead)
    supervisor.check(manager)
    worker.die(1)
    supervisor.check(manager)  # first death: at once
    clock.now += 2
    worker.die(1)
    supervisor.check(manager)  # again within 30 s of its start: 0.5 s
    assert supervisor.restarts == 1 and dead == [7, 107]
    clock.now += 0.4
    supervisor.check(manager)
    assert supervisor.restarts == 1  # still waiting; marked dead once only
    clock.now += 0.2
    supervisor.check(manager)
    assert supervisor.restarts == 2 and dead == [7, 107]


def test_nothing_is_restarted_while_the_gateway_stops_or_for_processes_that_are_not_servers() -> None:
    clock, dead = Clock(), []
    server = FakeProcess("Sanic-Server-0-0", pid=7)
    helper = FakeProcess("Sanic-Reloader-0", pid=8)
    manager: Any = FakeManager(server, helper)
    supervisor = make(clock, dead)
    helper.die(1)
    supervisor.check(manager)
    manager._shutting_down = True
    server.die(0)
    supervisor.check(manager)
    assert supervisor.restarts == 0 and dead == []


def test_a_manager_without_the_fields_relied_on_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    class OldManager:
        def __init__(self) -> None:
            self.processes = [FakeProcess("Sanic-Server-0-0", pid=7)]
            self.processes[0].die(1)

    supervisor = make(Clock(), [])
    with caplog.at_level(logging.WARNING, logger="gateway"):
        supervisor.check(OldManager())  # type: ignore[arg-type]
    assert "lacks WorkerManager._shutting_down" in caplog.text and supervisor.restarts == 0


def test_supervising_wraps_the_state_sync_once_and_not_on_a_sanic_without_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert supervise_workers() is True
    wrapped = WorkerManager._sync_states
    assert "supervisor" in getattr(wrapped, "__gateway_wrapped__", ())
    assert supervise_workers() is True and WorkerManager._sync_states is wrapped
    monkeypatch.delattr(supervisor_module.WorkerProcess, "restart")
    monkeypatch.setattr(WorkerManager, "_sync_states", lambda self: None)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert supervise_workers() is False
    assert "lacks WorkerProcess.restart" in caplog.text
