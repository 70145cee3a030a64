"""The prefix policy with real processes: instances agree through Redis, and route alone without it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import FakeVLLM, Gateway, RedisServer, replicas_seen

CONVERSATIONS = [f"conv-{i}" for i in range(9)]
WAIT_SECONDS = 10.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def start(start_gateway: Callable[..., Gateway], fakes: list[FakeVLLM], redis_url: str) -> Gateway:
    return start_gateway(
        MODEL_ROUTE_tiny=",".join(fake.url for fake in fakes),
        ROUTING_POLICY="prefix",
        USE_REDIS="true",
        REDIS_URL=redis_url,
        RATE_LIMIT_PER_MIN="0",
        METRICS_PUBLIC="true",
    )


def messages(conversation: str, turns: int) -> list[dict[str, str]]:
    """A conversation's prompt at its `turns`-th turn: a system prompt of its own, then the turns."""
    said = [{"role": "system", "content": f"You are the assistant of {conversation}. " * 40}]
    for number in range(turns):
        said.append({"role": "user", "content": f"Question {number} of {conversation}? " * 10})
        said.append({"role": "assistant", "content": f"Answer {number}. " * 20})
    return said[:-1]


def turn(gateway: Gateway, conversation: str, turns: int) -> None:
    """One turn, on a new connection (so that it may land on any worker)."""
    body = {"model": "tiny-llama", "messages": messages(conversation, turns), "max_tokens": 2}
    headers = {"x-request-id": f"{conversation}.t{turns}"}
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        response = client.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    """A metric's value summed over the label sets that hold `labels` (0 if absent)."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and labels.items() <= found.labels.items()
    )


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS} s: {what}"
        time.sleep(0.05)


def received(gateway: Gateway) -> float:
    """Index entries this instance learned from the other."""
    return sample(gateway, "gateway_prefix_index_updates_total", direction="received")


def test_two_instances_send_each_conversation_to_one_replica(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM], redis_server: RedisServer
) -> None:
    gateways = [start(start_gateway, replicas, redis_server.url) for _ in range(2)]
    for turns in range(1, 5):
        before = [received(gateway) for gateway in gateways]
        for index, conversation in enumerate(CONVERSATIONS):
            turn(gateways[(index + turns) % 2], conversation, turns)  # the turns alternate between instances
        # Before the next turn, each instance has learned the other's placements (about 0.1 s).
        wait_until(lambda seen=before: all(received(g) > b for g, b in zip(gateways, seen, strict=True)), "sharing")
    placed = replicas_seen(replicas)
    assert set(placed) == set(CONVERSATIONS)
    assert all(len(urls) == 1 for urls in placed.values()), placed
    assert len({url for urls in placed.values() for url in urls}) == 3  # spread over every replica
    routes = httpx.get(f"{gateways[0].url}/api/routes").json()["routes"]
    assert routes[0]["policy"] == "prefix"
    hits = sum(sample(gateway, "gateway_routing_decisions_total", reason="prefix_hit") for gateway in gateways)
    assert hits >= 3 * len(CONVERSATIONS)
    assert all(sample(gateway, "gateway_prefix_index_shared") == 1 for gateway in gateways)


def test_without_redis_each_instance_routes_by_its_own_index_and_sharing_resumes(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM], redis_server: RedisServer
) -> None:
    gateways = [start(start_gateway, replicas, redis_server.url) for _ in range(2)]
    wait_until(lambda: all(sample(g, "gateway_prefix_index_shared") == 1 for g in gateways), "shared at start")
    redis_server.stop()
    for turns in range(1, 4):  # each conversation on one instance: its own index keeps it on one replica
        for index, conversation in enumerate(CONVERSATIONS):
            turn(gateways[index % 2], conversation, turns)
    placed = replicas_seen(replicas)
    assert all(len(urls) == 1 for urls in placed.values()), placed
    wait_until(lambda: all(sample(g, "gateway_prefix_index_shared") == 0 for g in gateways), "local, said so")

    restarted = RedisServer(port=redis_server.port)
    try:
        wait_until(lambda: all(sample(g, "gateway_prefix_index_shared") == 1 for g in gateways), "shared again")
        for fake in replicas:
            fake.reset()
        before = received(gateways[1])
        turn(gateways[0], "after", 1)
        wait_until(lambda: received(gateways[1]) > before, "the other instance learns again")
        turn(gateways[1], "after", 2)
        assert len(replicas_seen(replicas)["after"]) == 1
    finally:
        restarted.stop()


def test_an_ejected_replicas_conversations_move_and_the_others_stay(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM], redis_server: RedisServer
) -> None:
    gateway = start(start_gateway, replicas, redis_server.url)
    for conversation in CONVERSATIONS:
        turn(gateway, conversation, 1)
    before = {conversation: next(iter(urls)) for conversation, urls in replicas_seen(replicas).items()}
    victim = replicas[0]
    assert victim.url in before.values()
    victim.kill()
    survivors = replicas[1:]
    for fake in survivors:
        fake.reset()
    for conversation in CONVERSATIONS:
        turn(gateway, conversation, 2)  # failover keeps every answer a 200
    after = {conversation: next(iter(urls)) for conversation, urls in replicas_seen(survivors).items()}
    assert set(after) == set(CONVERSATIONS)
    for conversation, url in before.items():
        if url != victim.url:
            assert after[conversation] == url, conversation  # the others stayed where their prefix is
