"""gateway/server.py: a worker stops on SIGINT or SIGTERM, whenever in its start-up they come."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator

import pytest
import uvloop
from sanic import Sanic

from gateway import server

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture
def worker_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[asyncio.AbstractEventLoop, list[int]]]:
    """A uvloop loop with Sanic's stop registered for both signals, as in a worker; what Sanic's stop got."""
    monkeypatch.setattr(server, "SERVING_AFTER_S", 0.05)
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    loop = uvloop.new_event_loop()
    sanic_stops: list[int] = []
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, sanic_stops.append, signum)
    try:
        yield loop, sanic_stops
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        loop.close()


def run(loop: asyncio.AbstractEventLoop, seconds: float = 0.15) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def start_up(
    loop: asyncio.AbstractEventLoop, stops: list[str], signal_at_the_end: int | None = None
) -> Callable[[], None] | None:
    """A worker's last start-up run: the listener takes the signals over (and a signal may follow)."""

    async def listener() -> Callable[[], None] | None:
        release = server.stop_on_signals(loop, lambda: stops.append("stop"))
        if signal_at_the_end is not None:
            os.kill(os.getpid(), signal_at_the_end)
        return release

    return loop.run_until_complete(listener())


def test_uvloop_loses_a_signal_that_comes_between_two_runs(worker_loop) -> None:
    """Why the worker takes its signals over: Sanic's stop never hears this one."""
    loop, sanic_stops = worker_loop
    run(loop)

    os.kill(os.getpid(), signal.SIGINT)  # where the main process's SIGINT lands after an early SIGTERM
    run(loop)

    assert sanic_stops == []


def test_a_signal_between_start_up_and_serving_stops_the_worker_once_it_serves(worker_loop) -> None:
    loop, sanic_stops = worker_loop
    stops: list[str] = []
    assert start_up(loop, stops) is not None

    os.kill(os.getpid(), signal.SIGTERM)  # while the worker reports itself serving
    assert stops == []
    run(loop)

    assert stops == ["stop"]
    assert sanic_stops == []


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_a_signal_at_the_very_end_of_start_up_is_not_merged_away(worker_loop, signum: int) -> None:
    loop, _ = worker_loop
    stops: list[str] = []
    start_up(loop, stops, signal_at_the_end=signum)

    run(loop)

    assert stops == ["stop"]


def test_a_signal_that_came_just_before_the_takeover_is_not_lost(worker_loop) -> None:
    loop, sanic_stops = worker_loop
    stops: list[str] = []

    async def listener() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the loop has not read it yet when the listener starts
        server.stop_on_signals(loop, lambda: stops.append("stop"))

    loop.run_until_complete(listener())
    run(loop)

    assert stops == ["stop"]
    assert sanic_stops == []


def test_a_signal_while_serving_stops_at_once_and_only_once(worker_loop) -> None:
    loop, _ = worker_loop
    stops: list[str] = []
    start_up(loop, stops)
    run(loop)  # serving now

    async def signalled_twice() -> int:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.01)
        count = len(stops)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while stopping changes nothing
        await asyncio.sleep(0.05)
        return count

    assert loop.run_until_complete(signalled_twice()) == 1
    assert stops == ["stop"]


def test_once_stopped_the_signals_go_back_to_python_s_own_handlers(worker_loop) -> None:
    loop, _ = worker_loop
    release = start_up(loop, [])
    assert release is not None
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)

    release()

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_without_sanic_s_own_stop_nothing_is_taken_over() -> None:
    loop = uvloop.new_event_loop()
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    async def listener() -> Callable[[], None] | None:
        return server.stop_on_signals(loop, lambda: None)

    try:
        release = loop.run_until_complete(listener())
    finally:
        loop.close()

    assert release is None
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_a_served_app_gives_the_signals_back_when_it_stops(make_app: Callable[..., Sanic]) -> None:
    """sanic-testing serves in the test process: Ctrl-C and SIGTERM must work on it afterwards."""
    app = make_app()

    _, response = app.test_client.get("/docs/openapi.json")

    assert response.status == 200
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
