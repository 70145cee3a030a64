"""Engine load with real processes: vLLM's queue read once per machine, balanced on, and let go."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.procs import FakeVLLM, Gateway

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
INTERVAL = 0.2


def start(start_gateway: Callable[..., Gateway], fakes: list[FakeVLLM]) -> Gateway:
    return start_gateway(
        MODEL_ROUTE_tiny=",".join(fake.url for fake in fakes),
        ENGINE_METRICS_INTERVAL_SECONDS=str(INTERVAL),
        REPLICA_PROBE_INTERVAL_SECONDS="0.5",
    )


def send(gateway: Gateway, count: int) -> None:
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:

        def post(_: int) -> int:
            return client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(post, range(count))) == {200}


def chats(fake: FakeVLLM) -> int:
    return fake.stats()["requests"].get("/v1/chat/completions", 0)


def wait_for_engine_view(gateway: Gateway, waiting: dict[str, int]) -> None:
    """Until every worker's /api/routes shows these waiting counts (bounded)."""
    deadline = time.monotonic() + 10
    seen: dict[int, bool] = {}
    while time.monotonic() < deadline:
        with httpx.Client() as client:
            view = client.get(f"{gateway.url}/api/routes").json()
        engines = {r["url"]: r["engine"] for r in view["routes"][0]["replicas"]}
        seen[view["worker"]] = all(engines[url] and engines[url]["waiting"] == n for url, n in waiting.items())
        if len(seen) == 2 and all(seen.values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the workers did not all see {waiting}: {seen}")


def test_a_replica_with_a_long_queue_gets_the_requests_only_when_the_others_are_as_busy(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    busy, *idle = replicas
    busy.configure(waiting=50)
    gateway = start(start_gateway, replicas)
    wait_for_engine_view(gateway, {busy.url: 50, idle[0].url: 0})
    send(gateway, 60)
    assert chats(busy) == 0 and chats(idle[0]) + chats(idle[1]) == 60
    assert abs(chats(idle[0]) - chats(idle[1])) <= 12  # the idle ones share it


def test_the_metrics_are_read_once_per_machine_not_once_per_worker(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas)
    wait_for_engine_view(gateway, {fake.url: 0 for fake in replicas})
    before = replicas[0].stats()["requests"].get("/metrics", 0)
    time.sleep(2.0)
    reads = replicas[0].stats()["requests"].get("/metrics", 0) - before
    assert 2.0 / INTERVAL * 0.5 <= reads <= 2.0 / INTERVAL * 1.3, reads  # about 10, not 20
    assert gateway.popen.poll() is None


def test_unreadable_metrics_fall_back_to_in_flight_counts(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    broken = replicas[0]
    broken.configure(metrics_status=500, waiting=50)
    gateway = start(start_gateway, replicas)
    wait_for_engine_view(gateway, {replicas[1].url: 0, replicas[2].url: 0})
    with httpx.Client() as client:
        view = client.get(f"{gateway.url}/api/routes").json()
    assert {r["url"]: r["engine"] for r in view["routes"][0]["replicas"]}[broken.url] is None
    send(gateway, 60)
    assert chats(broken) >= 10  # balanced on in-flight counts: it still gets its share
