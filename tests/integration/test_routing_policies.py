"""Routing policies with real processes: a session's requests on one replica, agreed by instances."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.procs import FakeVLLM, Gateway, replicas_seen

SESSIONS = [f"conv-{i}" for i in range(24)]


def start(start_gateway: Callable[..., Gateway], fakes: list[FakeVLLM]) -> Gateway:
    return start_gateway(
        MODEL_ROUTE_tiny=",".join(fake.url for fake in fakes),
        ROUTING_POLICY_tiny="session",
        REPLICA_PROBE_INTERVAL_SECONDS="0.5",
        METRICS_PUBLIC="true",
    )


def turn(gateway: Gateway, session: str, number: int, *, by_header: bool = True) -> None:
    """One turn of a conversation, on a new connection (so that it may land on any worker)."""
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": f"turn {number}"}], "max_tokens": 2}
    headers = {"x-request-id": f"{session}.t{number}"}
    if by_header:
        headers["x-session-id"] = session
    else:
        body["user"] = session
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        response = client.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text


def test_two_instances_send_each_session_to_one_replica(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateways = [start(start_gateway, replicas), start(start_gateway, replicas)]
    for number in range(4):
        for index, session in enumerate(SESSIONS):
            # Turns alternate between the instances; half the sessions give their key as `user`.
            turn(gateways[(index + number) % 2], session, number, by_header=index % 2 == 0)
    placed = replicas_seen(replicas)
    assert set(placed) == set(SESSIONS)
    assert all(len(urls) == 1 for urls in placed.values()), placed
    used = {url for urls in placed.values() for url in urls}
    assert len(used) == 3  # and the sessions spread over every replica
    routes = httpx.get(f"{gateways[0].url}/api/routes").json()["routes"]
    assert routes[0]["policy"] == "session"
    scrape = httpx.get(f"{gateways[0].url}/metrics").text
    assert 'gateway_routing_decisions_total{policy="session",reason="affinity",route="tiny"}' in scrape


def test_an_ejected_replicas_sessions_move_and_the_others_stay(
    start_gateway: Callable[..., Gateway], replicas: list[FakeVLLM]
) -> None:
    gateway = start(start_gateway, replicas)
    for session in SESSIONS:
        turn(gateway, session, 0)
    before = {session: next(iter(urls)) for session, urls in replicas_seen(replicas).items()}
    victim = replicas[0]
    assert victim.url in before.values()
    victim.kill()
    survivors = replicas[1:]
    for fake in survivors:
        fake.reset()
    for session in SESSIONS:
        turn(gateway, session, 1)  # the failover keeps each answer a 200
    after = {session: next(iter(urls)) for session, urls in replicas_seen(survivors).items()}
    assert set(after) == set(SESSIONS)
    for session in SESSIONS:
        if before[session] == victim.url:
            assert after[session] != victim.url
        else:
            assert after[session] == before[session], session  # the others stayed where they were
