from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.replicas import Dispatch, Route, create_ejection_table, ejection_slots

URLS = ("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1")


def make_route(up: set[str] | None = None, interval: float = 0.02, shared: object = None) -> Route:
    async def probe(url: str) -> bool:
        return up is None or url in up

    return Route("r", URLS, probe=probe, probe_interval=interval, cooldown_max=1.0, shared=shared)


def two_workers(up: set[str], interval: float) -> tuple[Route, Route]:
    """The same route as two workers see it, over one ejection table."""
    table = create_ejection_table({"r": URLS}).get_obj()
    return make_route(up, interval, shared=table), make_route(up, interval, shared=table)


def test_ties_go_round_robin_and_load_goes_to_the_least_busy() -> None:
    route = make_route()
    picks = [route.choose(set()) for _ in range(6)]
    assert [r.url for r in picks] == list(URLS) * 2
    route.acquire(route.replicas[0])
    route.acquire(route.replicas[1])
    assert route.choose(set()) is route.replicas[2]
    route.release(route.replicas[0])
    route.release(route.replicas[1])
    assert [r.in_flight for r in route.replicas] == [0, 0, 0]


async def test_a_failed_replica_is_ejected_and_probed_back() -> None:
    up: set[str] = set()
    route = make_route(up)
    route.failed(route.replicas[0], "refused")
    assert not route.replicas[0].healthy
    assert all(route.choose(set()) is not route.replicas[0] for _ in range(6))
    up.add(URLS[0])
    await asyncio.sleep(0.1)
    assert route.replicas[0].healthy
    route.close()


async def test_cooldown_doubles_for_a_flapping_replica() -> None:
    route = make_route(interval=0.05)
    replica = route.replicas[0]
    cooldowns = []
    for _ in range(6):
        route.failed(replica, "x")
        assert replica.ejected_until is not None
        cooldowns.append(round(replica.ejected_until - time.monotonic(), 2))
        replica.ejected_until = None  # it came back, and fails again at once
    assert cooldowns == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]  # doubling, capped at cooldown_max
    route.close()


async def test_dispatch_fails_over_on_refusal_and_5xx_and_releases_every_lease() -> None:
    route = make_route(up=set())
    calls: list[str] = []

    async def call(url: str) -> httpx.Response:
        calls.append(url)
        if url == URLS[0]:
            raise httpx.ConnectError("refused")
        if url == URLS[1]:
            return httpx.Response(503)
        return httpx.Response(200, json={"ok": True})

    dispatch = Dispatch(route, max_attempts=3)
    try:
        response = await dispatch.send(call)
        assert [r.in_flight for r in route.replicas] == [0, 0, 1]
    finally:
        dispatch.release()
    assert response.status_code == 200 and calls == list(URLS)
    assert dispatch.retries == 2
    assert [r.in_flight for r in route.replicas] == [0, 0, 0]
    assert [r.healthy for r in route.replicas] == [False, False, True]
    route.close()


async def test_dispatch_gives_up_naming_the_route_with_the_last_failures_status() -> None:
    route = make_route(up=set())

    async def refused(url: str) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async def slow(url: str) -> httpx.Response:
        raise httpx.ConnectTimeout("slow")

    with pytest.raises(UpstreamUnavailable, match="route 'r'.*3 of 3 tried"):
        await Dispatch(route, 5).send(refused)
    with pytest.raises(UpstreamTimeout, match="route 'r'"):
        await Dispatch(make_route(up=set()), 2).send(slow)
    route.close()


async def test_read_timeout_is_not_retried() -> None:
    route = make_route()
    calls: list[str] = []

    async def call(url: str) -> httpx.Response:
        calls.append(url)
        raise httpx.ReadTimeout("slow generation")

    dispatch = Dispatch(route, 3)
    with pytest.raises(UpstreamTimeout):
        await dispatch.send(call)
    dispatch.release()
    assert len(calls) == 1 and all(r.healthy for r in route.replicas)


async def test_a_cancelled_request_releases_its_lease() -> None:
    route = make_route()

    async def hang(url: str) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError

    dispatch = Dispatch(route, 3)

    async def request() -> None:
        try:
            await dispatch.send(hang)
        finally:
            dispatch.release()

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0.01)
    assert sum(r.in_flight for r in route.replicas) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sum(r.in_flight for r in route.replicas) == 0


async def test_an_ejection_by_one_worker_takes_the_replica_out_of_every_workers_rotation() -> None:
    up: set[str] = set()
    first, second = two_workers(up, interval=0.05)
    try:
        first.failed(first.replicas[0], "refused")
        assert not second.replicas[0].healthy
        assert all(second.choose(set()) is not second.replicas[0] for _ in range(6))
        assert second.replicas[0].status()["state"] == "ejected"
        assert second.replicas[0].errors == 0  # the second worker never had to fail on it
        up.add(URLS[0])
        await asyncio.sleep(0.3)  # the first worker's probe finds it back
        assert first.replicas[0].healthy and second.replicas[0].healthy
        assert second.replicas[0] in {second.choose(set()) for _ in range(3)}
    finally:
        first.close()
        second.close()


async def test_a_replica_that_stays_down_stays_out_for_the_other_workers() -> None:
    first, second = two_workers(set(), interval=0.1)
    try:
        first.failed(first.replicas[1], "refused")
        # Past the first cool-down (0.1 s), the failing probes (every 0.1 s) keep holding it out:
        # each holds it 0.2 s, so a check between two probes has 0.1 s or more to spare.
        for _ in range(2):
            await asyncio.sleep(0.25)
            assert not second.replicas[1].healthy
    finally:
        first.close()
        second.close()


async def test_a_shared_ejection_runs_out_when_the_worker_that_made_it_is_gone() -> None:
    first, second = two_workers(set(), interval=0.05)
    try:
        first.failed(first.replicas[2], "refused")
        first.close()  # its probe stops, as if the worker had died
        assert not second.replicas[2].healthy
        await asyncio.sleep(0.3)
        assert second.replicas[2].healthy  # tried again; a failure now ejects it from here
        second.failed(second.replicas[2], "refused")
        assert not second.replicas[2].healthy
    finally:
        second.close()


def test_every_process_numbers_the_replicas_alike() -> None:
    routes = {"b": ("http://b1/v1", "http://b2/v1"), "a": ("http://a1/v1",)}
    assert ejection_slots(routes) == {"a": 0, "b": 1}
    assert ejection_slots(dict(reversed(list(routes.items())))) == {"a": 0, "b": 1}
    assert len(create_ejection_table(routes)) == 3
