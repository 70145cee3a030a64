"""Redis in real deployments: errors that Redis answers, a Redis Cluster, Sentinel failover."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis import Redis

from tests.integration.conftest import REDIS_URL
from tests.integration.test_operations import CHAT, _sample
from tests.procs import FakeVLLM, Gateway


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
