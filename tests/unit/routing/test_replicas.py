"""A route's replicas: balancing, ejection and probing back."""

from __future__ import annotations

import asyncio
import time

from gateway.routing.replicas import Route

URLS = ("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1")


def make_route(up: set[str] | None = None, interval: float = 0.02) -> Route:
    async def probe(url: str) -> bool:
        return up is None or url in up

    return Route("r", URLS, probe=probe, probe_interval=interval, cooldown_max=1.0)


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
