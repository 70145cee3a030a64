"""Replicas of one route with real processes: balance, ejection, recovery, failover, leases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.procs import FakeVLLM, Gateway

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def chat_count(fake: FakeVLLM) -> int:
    return fake.stats()["requests"].get("/v1/chat/completions", 0)


def sample(gateway: Gateway, name: str) -> float:
    scrape = httpx.get(f"{gateway.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines() if line.startswith(name))


def route_views(gateway: Gateway, workers: int = 2) -> dict[int, dict[str, Any]]:
    """/api/routes from every worker (each answers for itself), asked on new connections."""
    views: dict[int, dict[str, Any]] = {}
    for _ in range(100):
        with httpx.Client() as client:
            view = client.get(f"{gateway.url}/api/routes").json()
        views[view["worker"]] = view
        if len(views) == workers:
            break
    return views


def replica_states(gateway: Gateway) -> list[dict[str, dict[str, Any]]]:
    return [
        {replica["url"]: replica for replica in view["routes"][0]["replicas"]} for view in route_views(gateway).values()
    ]


def start(start_gateway: Callable[..., Gateway], fakes: list[FakeVLLM], **env: str) -> Gateway:
    return start_gateway(
        MODEL_ROUTE_tiny=",".join(fake.url for fake in fakes),
        METRICS_PUBLIC="true",
        REPLICA_PROBE_INTERVAL_SECONDS="0.5",
        **env,
    )


def test_concurrent_load_is_spread_evenly(start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]) -> None:
    gateway = start(start_gateway, replicas)
    for fake in replicas:
        fake.configure(latency=0.01)

    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=12)) as client:

        def post(_: int) -> int:
            return client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            assert set(pool.map(post, range(300))) == {200}
    counts = [chat_count(fake) for fake in replicas]
    mean = sum(counts) / 3
    assert sum(counts) == 300
    assert all(abs(count - mean) <= 0.2 * mean for count in counts), counts


def test_a_killed_replica_causes_no_error_and_comes_back(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas)
    for fake in replicas:
        fake.configure(latency=0.02)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        # A new connection per request: the kernel deals connections out to the workers by
        # address, and each worker must meet the dead replica (six kept-alive connections all
        # landed on one worker about once in 32 runs).
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not stop.is_set():
                statuses.append(client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        victim = replicas[1]
        victim.kill()
        time.sleep(1.5)
        # Out of rotation in every worker, after at most a few failures (those in flight).
        states = replica_states(gateway)
        assert all(state[victim.url]["state"] == "ejected" for state in states)
        assert sample(gateway, f'gateway_replica_errors_total{{replica="{victim.url}",route="tiny"}}') <= 12
        before = len(statuses)
        time.sleep(1.0)
        assert len(statuses) > before  # the load goes on

        revived = FakeVLLM("tiny-llama", port=victim.port)
        replicas[1] = revived
        revived.configure(latency=0.02)
        came_back = time.monotonic()
        while chat_count(revived) == 0 and time.monotonic() - came_back < 5:
            time.sleep(0.05)
        assert time.monotonic() - came_back < 0.5 + 0.6  # one probe interval, plus scheduling
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert statuses and set(statuses) == {200}
    assert sample(gateway, 'gateway_upstream_retries_total{route="tiny"}') >= 1


def test_a_replica_ejected_by_one_worker_is_out_of_every_workers_rotation(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    dead, alive = replicas[0], replicas[1]
    dead.stop()  # refuses connections from now on
    gateway = start(start_gateway, [dead, alive])  # listed first: each worker's first pick
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
    assert response.status_code == 200  # failed over to the live replica
    states = replica_states(gateway)
    assert len(states) == 2
    # Out of rotation in both workers, though only the worker that served the request met it.
    assert [state[dead.url]["state"] for state in states] == ["ejected", "ejected"]
    assert sorted(state[dead.url]["errors"] for state in states) == [0, 1]
    assert chat_count(alive) == 1


def test_error_status_fails_over_and_all_down_names_the_route(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas, UPSTREAM_MAX_ATTEMPTS="3")
    replicas[0].configure(status=503)
    for _ in range(6):
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code == 200
    for fake in replicas:
        fake.stop()
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert "'tiny'" in response.json()["error"]["message"]
    assert httpx.get(f"{gateway.url}/health").json()["vllm"] == "unavailable"


def test_stream_fails_over_before_its_first_byte(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas[:2])
    replicas[0].stop()
    for _ in range(4):
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert response.status_code == 200
            assert [line for line in response.iter_lines() if line][-1] == "data: [DONE]"


def test_model_lists_are_the_union_of_healthy_replicas(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    replicas[0].configure(models=["tiny-llama", "only-on-first"])
    gateway = start(start_gateway, replicas[:2])
    listed = {model["id"] for model in httpx.get(f"{gateway.url}/v1/models").json()["data"]}
    assert listed == {"tiny-llama", "only-on-first"}
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "only-on-first"}).status_code == 200


def test_in_flight_counts_return_to_zero_after_abandoned_requests(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas)

    patient = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32))
    impatient = httpx.Client(timeout=0.15, limits=httpx.Limits(max_connections=32))

    def one(index: int) -> None:
        kind = index % 6
        try:
            if kind == 0:  # abandoned while the upstream is still thinking
                impatient.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "fake": {"latency": 0.5}})
            elif kind == 1:  # abandoned mid-stream
                body = {"model": "tiny-llama", "messages": CHAT["messages"], "stream": True}
                body["fake"] = {"chunks": 50, "chunk_interval": 0.05}
                with patient.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as response:
                    for number, _ in enumerate(response.iter_lines()):
                        if number == 4:
                            break  # hang up after the first events
            elif kind == 2:
                with patient.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                    r.read()
            else:
                patient.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
        except httpx.TimeoutException:
            pass

    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(one, range(1000)))
    patient.close()
    impatient.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sample(gateway, "gateway_replica_in_flight") != 0:
        time.sleep(0.1)
    assert sample(gateway, "gateway_replica_in_flight") == 0
    assert sample(gateway, "gateway_active_streams") == 0
    for state in replica_states(gateway):
        assert [replica["in_flight"] for replica in state.values()] == [0, 0, 0]
    assert sum(fake.stats()["aborted"] for fake in replicas) >= 300
