"""gateway/process/server.py: a worker stops on SIGINT or SIGTERM, whenever in its start-up they come."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator

import pytest
import uvloop
from sanic import Sanic

from gateway.process import server

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Worker:
    """A uvloop loop with Sanic's stop registered for both signals, as in a worker, and the
    gateway's StopSignals over it; `serving` plays Sanic's `app.state.is_running`."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.sanic_stops: list[int] = []
        self.stops: list[str] = []
        self.serving = False
        for signum in STOP_SIGNALS:
            self.loop.add_signal_handler(signum, self.sanic_stops.append, signum)
        self.signals = server.StopSignals(self.loop, lambda: self.stops.append("stop"), lambda: self.serving)

    def start_up(self, signal_before: int | None = None, signal_after: int | None = None) -> bool:
        """The start-up run whose listener takes the signals over (a signal may come around it)."""

        async def listener() -> bool:
            if signal_before is not None:
                os.kill(os.getpid(), signal_before)  # not read by the loop yet when the listener runs
            taken = self.signals.take_over()
            if signal_after is not None:
                os.kill(os.getpid(), signal_after)
            return taken

        return self.loop.run_until_complete(listener())

    def run(self, seconds: float = 0.15) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    monkeypatch.delenv("SANIC_WORKER_NAME", raising=False)
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    worker = Worker()
    try:
        yield worker
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        worker.loop.close()


def test_uvloop_loses_a_signal_that_comes_between_two_runs(worker: Worker) -> None:
    """Why the worker takes its signals over: Sanic's stop never hears this one."""
    worker.run()

    os.kill(os.getpid(), signal.SIGINT)  # where the main process's SIGINT lands after an early SIGTERM
    worker.run()

    assert worker.sanic_stops == []


def test_a_signal_between_start_up_and_serving_stops_the_worker_once_it_serves(worker: Worker) -> None:
    assert worker.start_up()

    os.kill(os.getpid(), signal.SIGTERM)  # while the worker reports itself serving
    worker.run()
    assert worker.stops == []  # not while starting: the stop would merge with a start-up run's end

    worker.serving = True
    worker.run()
    assert worker.stops == ["stop"]
    assert worker.sanic_stops == []


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_a_signal_at_the_very_end_of_start_up_is_not_merged_away(worker: Worker, signum: int) -> None:
    worker.start_up(signal_after=signum)
    worker.serving = True

    worker.run()

    assert worker.stops == ["stop"]


def test_a_signal_that_came_just_before_the_takeover_is_not_lost(worker: Worker) -> None:
    worker.start_up(signal_before=signal.SIGINT)
    worker.serving = True

    worker.run()

    assert worker.stops == ["stop"]
    assert worker.sanic_stops == []


def test_a_signal_while_serving_stops_at_once_and_only_once(worker: Worker) -> None:
    worker.start_up()
    worker.serving = True

    async def signalled_twice() -> int:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.01)
        count = len(worker.stops)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping changes nothing
        await asyncio.sleep(0.05)
        return count

    assert worker.loop.run_until_complete(signalled_twice()) == 1
    assert worker.stops == ["stop"]


def test_a_signal_while_shutting_down_changes_nothing(worker: Worker) -> None:
    worker.start_up()
    worker.serving = True
    worker.signals.shutting_down()  # stopped another way: before_server_stop has run

    os.kill(os.getpid(), signal.SIGTERM)
    worker.run()

    assert worker.stops == []


def test_once_stopped_the_signals_go_back_to_python_s_own_handlers(worker: Worker) -> None:
    worker.start_up()
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)

    worker.signals.release()

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_worker_of_sanic_s_manager_keeps_ignoring_signals_to_the_end(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANIC_WORKER_NAME", "Sanic-Server-0-0")
    worker.start_up()
    taken_over = signal.getsignal(signal.SIGTERM)

    worker.signals.release()

    assert signal.getsignal(signal.SIGTERM) is taken_over


def test_without_sanic_s_own_stop_nothing_is_taken_over() -> None:
    loop = uvloop.new_event_loop()
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    signals = server.StopSignals(loop, lambda: None, lambda: True)

    async def listener() -> bool:
        return signals.take_over()

    try:
        taken = loop.run_until_complete(listener())
    finally:
        loop.close()

    assert taken is False
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_a_served_app_gives_the_signals_back_when_it_stops(make_app: Callable[..., Sanic]) -> None:
    """sanic-testing serves in the test process: Ctrl-C and SIGTERM must work on it afterwards."""
    app = make_app()

    _, response = app.test_client.get("/docs/openapi.json")

    assert response.status == 200
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.fixture
def affinity() -> Iterator[set[int]]:
    """This process's CPUs, given back after the test."""
    cpus = os.sched_getaffinity(0)
    yield set(cpus)
    os.sched_setaffinity(0, cpus)


def test_a_pinned_worker_runs_on_the_cpu_of_its_number(affinity: set[int]) -> None:
    cpus = sorted(affinity)
    cpu = server.pin_worker_to_cpu("on", workers=2, worker_name="Sanic-Server-1-3")  # restarted 3 times
    assert cpu == cpus[1 % len(cpus)]
    assert os.sched_getaffinity(0) == {cpu}


@pytest.mark.parametrize(
    ("mode", "workers", "name"),
    [
        ("off", 1, "Sanic-Server-0-0"),
        ("auto", None, "Sanic-Server-0-0"),  # more workers than CPUs
        ("on", 1, ""),  # not a Sanic server process
    ],
)
def test_workers_are_left_to_the_scheduler(affinity: set[int], mode: str, workers: int | None, name: str) -> None:
    workers = len(affinity) + 1 if workers is None else workers
    assert server.pin_worker_to_cpu(mode, workers, worker_name=name) is None
    assert os.sched_getaffinity(0) == affinity


def test_auto_pins_as_many_workers_as_cpus(affinity: set[int]) -> None:
    assert server.pin_worker_to_cpu("auto", len(affinity), worker_name="Sanic-Server-0-0") == min(affinity)


def test_server_processes_are_counted_by_number_once_each() -> None:
    names = ["Sanic-Main", "Sanic-Server-0-0", "Sanic-Server-1-0", "Sanic-Server-1-1", "Sanic-Inspector-0"]
    assert server.count_server_processes(names) == 2  # Server-1 restarted: its old name lingers
