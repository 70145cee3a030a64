"""The replicas' shared cells (`gateway/shared/ejections.py`), and `Route` over them as several workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from gateway.routing.replicas import Route
from gateway.shared.ejections import EJECTIONS, HELD_UNTIL, create_table, local_cells, replica_cells

URLS = ("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1")
ROUTES = {"r": URLS}


def prober(up: set[str], takes: float = 0.0) -> Callable[[str], Awaitable[bool]]:
    async def probe(url: str) -> bool:
        await asyncio.sleep(takes)
        return url in up

    return probe


@pytest.fixture
def workers() -> Iterator[Callable[..., list[Route]]]:
    """`workers(up, *intervals, takes=...)`: the route as workers with these probe intervals see it,
    over one table; `up`: the replicas that answer a probe, which takes `takes` seconds."""
    made: list[Route] = []

    def make(up: set[str], *intervals: float, takes: float = 0.0) -> list[Route]:
        table = create_table(ROUTES)
        for interval in intervals:
            cells = replica_cells(table, ROUTES)
            assert cells is not None
            made.append(
                Route(
                    "r",
                    URLS,
                    probe=prober(up, takes),
                    probe_interval=interval,
                    cooldown_max=1.0,
                    probe_timeout=takes,
                    cells=cells["r"],
                )
            )
        return made[-len(intervals) :]

    yield make
    for route in made:
        route.close()


async def test_an_ejection_by_one_worker_takes_the_replica_out_of_every_workers_rotation(
    workers: Callable[..., list[Route]],
) -> None:
    up: set[str] = set()
    first, second = workers(up, 0.05, 0.05)
    first.failed(first.replicas[0], "refused")
    assert not second.replicas[0].healthy
    assert all(second.choose(set()) is not second.replicas[0] for _ in range(6))
    assert second.replicas[0].status()["state"] == "ejected"
    assert second.replicas[0].errors == 0  # the second worker never had to fail on it
    up.add(URLS[0])
    await asyncio.sleep(0.3)  # the first worker's probe finds it back
    assert first.replicas[0].healthy and second.replicas[0].healthy
    assert second.replicas[0] in {second.choose(set()) for _ in range(3)}


async def test_a_replica_that_stays_down_stays_out_for_the_other_workers(
    workers: Callable[..., list[Route]],
) -> None:
    first, second = workers(set(), 0.2, 0.2)
    first.failed(first.replicas[1], "refused")
    # Past the first cool-down (0.2 s), each failing probe (every 0.2 s) holds it out 0.4 s more:
    # a check between two probes has 0.2 s or more to spare.
    for _ in range(2):
        await asyncio.sleep(0.5)
        assert not second.replicas[1].healthy


async def test_a_probe_slower_than_the_interval_leaves_no_gap(workers: Callable[..., list[Route]]) -> None:
    # A host that drops packets: each probe waits out its timeout, three intervals long.
    first, second = workers(set(), 0.05, 0.05, takes=0.15)
    first.failed(first.replicas[0], "connect timeout")
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:
        assert not second.replicas[0].healthy
        await asyncio.sleep(0.01)


async def test_a_late_answer_does_not_undo_another_workers_newer_ejection(
    workers: Callable[..., list[Route]],
) -> None:
    first, second, third = workers({URLS[2]}, 0.05, 1.0, 1.0)
    first.failed(first.replicas[2], "refused")  # its probe, 0.05 s on, will find it answering
    second.failed(second.replicas[2], "refused")  # a second failure: held out for its 1 s cool-down
    await asyncio.sleep(0.3)  # the first worker's probe answered meanwhile: back in its own view
    assert first.replicas[2].ejected_until is None
    assert not third.replicas[2].healthy  # but the second worker's longer hold stands


async def test_the_cool_down_grows_with_ejections_by_any_worker(workers: Callable[..., list[Route]]) -> None:
    first, second = workers(set(), 0.05, 0.05)
    cooldowns = []
    for route in (first, second, first, second):
        replica = route.replicas[0]
        route.failed(replica, "refused")
        assert replica.ejected_until is not None
        cooldowns.append(round(replica.ejected_until - time.monotonic(), 2))
        replica.ejected_until = None  # it came back, and fails again at once
    assert cooldowns == [0.05, 0.1, 0.2, 0.4]
    assert first.replicas[0].ejections == second.replicas[0].ejections == 4


async def test_a_hold_runs_out_when_the_worker_that_made_it_is_gone(workers: Callable[..., list[Route]]) -> None:
    first, second = workers(set(), 0.05, 0.05)
    first.failed(first.replicas[2], "refused")
    first.close()  # its probe stops, as if the worker had died
    assert not second.replicas[2].healthy
    await asyncio.sleep(0.3)  # its cool-down (0.05 s) and hold (two intervals more) are over
    assert second.replicas[2].healthy
    second.failed(second.replicas[2], "refused")  # the next failure ejects it from here
    assert not second.replicas[2].healthy


def test_every_process_lays_the_table_out_alike() -> None:
    routes = {"b": ("http://b1/v1", "http://b2/v1"), "a": ("http://a1/v1",)}
    table = create_table(routes)
    cells = replica_cells(table, routes)
    same = replica_cells(table, dict(reversed(list(routes.items()))))  # another order, same routes
    assert cells is not None and same is not None
    cells["b"][1][HELD_UNTIL] = 42.0
    assert same["b"][1][HELD_UNTIL] == 42.0
    assert [same["a"][0][HELD_UNTIL], same["b"][0][HELD_UNTIL]] == [0.0, 0.0]


def test_a_table_made_for_other_routes_is_not_used() -> None:
    table = create_table({"a": ("http://a1/v1",)})
    assert replica_cells(table, {"a": ("http://a1/v1", "http://a2/v1")}) is None
    assert replica_cells(table, {"b": ("http://a1/v1",)}) is None


async def test_without_a_table_each_replica_has_cells_of_its_own() -> None:
    route = Route("r", URLS, probe=prober(set()), probe_interval=1.0, cooldown_max=1.0)
    route.failed(route.replicas[0], "refused")
    assert [replica.cells[EJECTIONS] for replica in route.replicas] == [1.0, 0.0, 0.0]
    assert local_cells() == [0.0, 0.0, 0.0]
    route.close()
