"""Work asked for any number of times in one step of the event loop, done once after it."""

from __future__ import annotations

import asyncio

from gateway.observability.loop_step import AfterLoopStep


async def test_the_work_runs_once_after_the_step_that_asked_for_it() -> None:
    runs: list[int] = []
    batch = AfterLoopStep(lambda: runs.append(len(runs)))
    batch.bind(asyncio.get_running_loop())
    runs.clear()  # binding did whatever was pending: nothing here
    for _ in range(5):
        batch.request()
    assert runs == []  # not during the step
    await asyncio.sleep(0)
    assert runs == [0]
    batch.request()
    await asyncio.sleep(0)
    assert runs == [0, 1]


def test_without_a_loop_the_work_runs_at_each_request() -> None:
    runs: list[None] = []
    batch = AfterLoopStep(lambda: runs.append(None))
    batch.request()
    batch.request()
    assert len(runs) == 2


async def test_binding_does_what_is_pending_first() -> None:
    runs: list[None] = []
    batch = AfterLoopStep(lambda: runs.append(None))
    batch.bind(asyncio.get_running_loop())
    runs.clear()
    batch.request()
    assert runs == []
    batch.bind(None)  # the worker stops: nothing may be left behind
    assert len(runs) == 1
