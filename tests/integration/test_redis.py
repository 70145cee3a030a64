"""Redis in real deployments: errors that Redis answers, a Redis Cluster, Sentinel failover."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis import Redis
from redis.crc import key_slot

from tests.integration.conftest import REDIS_URL
from tests.integration.test_operations import CHAT, _sample
from tests.procs import FakeVLLM, Gateway
from tests.redis_servers import RedisClusterServers, RedisSentinelGroup, wait_until


@pytest.mark.parametrize("wrong_key", [False, True])
def test_an_error_that_redis_answers_leaves_the_models_cache_shared(
    start_gateway: Callable[..., Gateway],
    chat_upstream: FakeVLLM,
    embed_upstream: FakeVLLM,
    redis_prefix: str,
    wrong_key: bool,
) -> None:
    # RATE_LIMIT_PER_MIN=100000 made the limiter's script fail in Redis on every call, which
    # marked Redis down for everything, and each worker listed the routes for itself. With
    # `wrong_key`, a key of the wrong type makes the script fail for this client still: the
    # limiter falls back locally, call by call, and the models cache stays shared.
    if wrong_key:
        redis = Redis.from_url(REDIS_URL)
        redis.hset(f"{redis_prefix}rl:{{127.0.0.1}}", "not", "a bucket")
        redis.close()
    gateway = start_gateway(
        workers=2,
        MODEL_ROUTE_chat=chat_upstream.url,
        MODEL_ROUTE_embed=embed_upstream.url,
        USE_REDIS="true",
        REDIS_PREFIX=redis_prefix,
        RATE_LIMIT_PER_MIN="100000",
        MODELS_CACHE_TTL_SECONDS="60",
        METRICS_PUBLIC="true",
    )
    listed_before = [fake.stats()["requests"].get("/v1/models", 0) for fake in (chat_upstream, embed_upstream)]

    def one(_: int) -> tuple[int, int]:
        with httpx.Client(timeout=10) as client:  # one connection: the worker that answers both
            worker = client.get(f"{gateway.url}/api/routes").json()["worker"]
            return worker, client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(40)))
    assert {status for _, status in answers} == {200}
    assert len({worker for worker, _ in answers}) == 2  # both workers routed by model
    listed = [fake.stats()["requests"].get("/v1/models", 0) for fake in (chat_upstream, embed_upstream)]
    assert [after - before for after, before in zip(listed, listed_before, strict=True)] == [1, 1]
    scrape = httpx.get(f"{gateway.url}/metrics").text
    errors = 80 if wrong_key else 0  # every limited request, or none
    assert _sample(scrape, 'gateway_redis_errors_total{purpose="rate limiter"}') == errors
    output = gateway.output()
    assert "redis unavailable" not in output
    assert output.count("redis answered the rate limiter with an error") == (2 if wrong_key else 0)  # once a worker


LIMIT = 4  # requests a minute per client: one every 15 s, so none comes back during a test


def spend(gateways: list[Gateway], client_ip: str, count: int) -> list[int]:
    """`count` requests from `client_ip`, one after another, each on a new connection (so any
    worker may answer), taking turns over `gateways`."""
    statuses = []
    for index in range(count):
        with httpx.Client(timeout=10) as client:
            response = client.get(
                f"{gateways[index % len(gateways)].url}/v1/models", headers={"X-Forwarded-For": client_ip}
            )
        statuses.append(response.status_code)
    return statuses


def limited_env(upstream: FakeVLLM, **redis: str) -> dict[str, str]:
    return {
        "MODEL_ROUTE_chat": upstream.url,
        "RATE_LIMIT_PER_MIN": str(LIMIT),
        "TRUSTED_PROXIES": "127.0.0.1",  # X-Forwarded-For names the client: one per test phase
        "USE_REDIS": "true",
        "REDIS_PREFIX": "gw:",
        **redis,
    }


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(masters=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_sentinels() -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup("mymaster")
    yield group
    group.stop()


def test_a_redis_cluster_gives_every_instance_one_limit(
    redis_cluster: RedisClusterServers, start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    # Two instances, each told of a different node: the cluster tells them the rest.
    gateways = [
        start_gateway(workers=2, **limited_env(chat_upstream, REDIS_CLUSTER="true", REDIS_URL=url))
        for url in redis_cluster.urls[:2]
    ]
    # One client whose bucket lives on each of the three masters.
    clients = {node.port: client_on(redis_cluster, node.port, "10.0.0") for node in redis_cluster.nodes}
    for client_ip in clients.values():
        assert spend(gateways, client_ip, LIMIT + 2) == [200] * LIMIT + [429] * 2, client_ip
    for gateway in gateways:
        assert "redis unavailable" not in gateway.output()  # every answer came from the cluster
        assert "redis answered" not in gateway.output()
    # The third client's bucket is on the node neither instance was told of.
    third = redis_cluster.nodes[2].port
    assert _has_key(third, f"gw:rl:{{{clients[third]}}}")

    # That node fails: the cluster no longer serves all its slots, which is an outage as with
    # one server (local limits, no request failed), until the node is back.
    redis_cluster.nodes[2].kill()
    during_ip = client_on(redis_cluster, third, "10.2.0")
    during = [status for gateway in gateways for status in spend([gateway] * 4, during_ip, 4)]
    assert set(during) <= {200, 429} and all("redis unavailable" in g.output() for g in gateways), during
    redis_cluster.restart(2)
    wait_until("every worker that saw the outage uses Redis again", lambda: all(_back(g) for g in gateways), 15)
    fresh = client_on(redis_cluster, third, "10.3.0")
    assert spend(gateways, fresh, LIMIT + 1) == [200] * LIMIT + [429]
    assert _has_key(third, f"gw:rl:{{{fresh}}}")


def test_sentinel_failover_keeps_one_limit_through_the_new_master(
    redis_sentinels: RedisSentinelGroup, start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    env = limited_env(
        chat_upstream,
        REDIS_SENTINELS=redis_sentinels.addresses,
        REDIS_SENTINEL_MASTER=redis_sentinels.name,
        REDIS_URL="redis://127.0.0.1:1/0",  # its database only: the address comes from the sentinels
    )
    gateways = [start_gateway(workers=2, **env) for _ in range(2)]
    assert spend(gateways, "10.1.0.1", LIMIT + 1) == [200] * LIMIT + [429]
    assert _has_key(redis_sentinels.master_port(), "gw:rl:{10.1.0.1}")

    # The master dies. Until the sentinels have promoted the replica, and each worker has
    # found it, requests are served with local limits: never failed.
    during: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        turn = 0
        while not stop.is_set():
            during.extend(spend([gateways[turn % len(gateways)]], "10.1.0.2", 1))
            turn += 1

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        killed = time.monotonic()
        failover_seconds = redis_sentinels.fail_master()
        wait_until("every worker that saw the outage uses Redis again", lambda: all(_back(g) for g in gateways), 15)
        back_seconds = time.monotonic() - killed
    finally:
        stop.set()
        asker.join(timeout=15)
    assert during and set(during) <= {200, 429}, Counter(during)
    outages = sum(gateway.output().count("redis unavailable") for gateway in gateways)
    print(
        f"failover {failover_seconds:.1f} s, all workers on the new master {back_seconds:.1f} s after the kill"
        f" ({outages} saw the outage); {len(during)} requests meanwhile: {dict(Counter(during))}"
    )

    # Through the new master: a new client has one budget across both instances again, and
    # the first one's spent budget was replicated to it.
    assert spend(gateways, "10.1.0.3", LIMIT + 1) == [200] * LIMIT + [429]
    assert _has_key(redis_sentinels.master_port(), "gw:rl:{10.1.0.3}")
    assert spend(gateways, "10.1.0.1", 2) == [429, 429]


def client_on(cluster: RedisClusterServers, port: int, network: str) -> str:
    """An address in `network`.0/24 whose rate-limit bucket the cluster node on `port` holds."""
    return next(
        ip for ip in (f"{network}.{n}" for n in range(1, 255)) if cluster.node_for_slot(key_slot(ip.encode())) == port
    )


def _has_key(port: int | None, key: str) -> bool:
    assert port is not None, "no Redis to ask"
    node = Redis(host="127.0.0.1", port=port)
    try:
        return bool(node.exists(key))
    finally:
        node.close()


def _back(gateway: Gateway) -> bool:
    """Each worker logs an outage once when it starts and once when it ends."""
    output = gateway.output()
    return output.count("redis is answering again") >= output.count("redis unavailable")
