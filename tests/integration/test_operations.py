"""Operations with real processes: API keys, one global rate limit, metrics over workers, logs, CORS."""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.procs import FakeVLLM, Gateway, RedisServer

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "secret prompt text"}], "max_tokens": 2}


def burst(urls: list[str], count: int, headers: dict[str, str] | None = None) -> list[int]:
    """`count` concurrent requests, each on its own connection (so the workers share them)."""

    def one(index: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.get(f"{urls[index % len(urls)]}/v1/models", headers=headers).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("use_redis", [False, True])
def test_one_budget_across_three_workers(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM, redis_prefix: str, use_redis: bool
) -> None:
    gateway = start_gateway(
        workers=3,
        MODEL_ROUTE_chat=chat_upstream.url,
        RATE_LIMIT_PER_MIN="5",
        USE_REDIS=str(use_redis).lower(),
        REDIS_PREFIX=redis_prefix,
    )
    statuses = burst([gateway.url], 30)
    assert statuses.count(200) in (5, 6)  # 5, ±1 for a token refilled during the burst (12 s each)
    assert statuses.count(429) == 30 - statuses.count(200)


def test_two_instances_sharing_redis_share_one_budget(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM, redis_prefix: str
) -> None:
    env = {
        "MODEL_ROUTE_chat": chat_upstream.url,
        "RATE_LIMIT_PER_MIN": "6",
        "USE_REDIS": "true",
        "REDIS_PREFIX": redis_prefix,
    }
    first, second = start_gateway(**env), start_gateway(**env)
    statuses = burst([first.url, second.url], 24)
    assert statuses.count(200) in (6, 7)


def test_limited_responses_carry_rate_limit_headers(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(workers=1, MODEL_ROUTE_chat=chat_upstream.url, RATE_LIMIT_PER_MIN="2")
    first = httpx.get(f"{gateway.url}/v1/models")
    assert first.headers["x-ratelimit-limit"] == "2" and first.headers["x-ratelimit-remaining"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) > 0
    httpx.get(f"{gateway.url}/v1/models")
    refused = httpx.get(f"{gateway.url}/v1/models")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    # /health and /metrics are never limited.
    assert all(httpx.get(f"{gateway.url}/health").status_code == 200 for _ in range(5))
    assert all(httpx.get(f"{gateway.url}/metrics").status_code != 429 for _ in range(3))


def test_redis_outage_degrades_and_the_limit_returns_with_redis(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    redis = RedisServer()
    try:
        gateway = start_gateway(
            workers=2,
            MODEL_ROUTE_chat=chat_upstream.url,
            RATE_LIMIT_PER_MIN="5",
            USE_REDIS="true",
            REDIS_URL=redis.url,
            METRICS_PUBLIC="true",
        )
        assert burst([gateway.url], 3) == [200] * 3
        redis.stop()
        during = burst([gateway.url], 20)
        assert set(during) <= {200, 429}  # no request fails because Redis is gone
        # The machine-local limiter took over, from where Redis was: 2 of 5 left, not a fresh 5
        # (one more may have refilled meanwhile: a request every 12 s).
        assert during.count(200) in (2, 3)
        redis = RedisServer(port=redis.port)  # Redis is back, empty
        assert _wait_for_redis_use(gateway)
        after = burst([gateway.url], 20)
        assert after.count(200) in (5, 6)
        scrape = httpx.get(f"{gateway.url}/metrics").text
        assert _sample(scrape, 'gateway_redis_fallbacks_total{purpose="rate limiter"}') >= 1
        assert gateway.output().count("redis unavailable") <= 2  # once per outage and worker
    finally:
        redis.stop()


def _wait_for_redis_use(gateway: Gateway) -> bool:
    """The gateway retries Redis after a short back-off; wait until a worker says it is back."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        httpx.get(f"{gateway.url}/health")  # not limited: costs no budget
        if "redis is answering again" in gateway.output():
            return True
        time.sleep(0.5)
    return False


def _sample(scrape: str, name: str) -> float:
    total = 0.0
    for line in scrape.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_scrape_counts_the_requests_of_all_workers(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(workers=2, MODEL_ROUTE_chat=chat_upstream.url, METRICS_PUBLIC="true")

    def post(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(post, range(40))) == [200] * 40
    for _ in range(6):
        with httpx.Client() as client:  # a new connection: any worker may answer
            scrape = client.get(f"{gateway.url}/metrics").text
        counted = _sample(scrape, 'gateway_requests_total{endpoint="/v1/chat/completions",method="POST",status="200"}')
        assert counted == 40
        assert _sample(scrape, 'gateway_tokens_total{kind="completion",model="tiny-llama",route="chat"}') == 80
        assert _sample(scrape, 'gateway_upstream_duration_seconds_count{model="tiny-llama",route="chat"}') == 40


def test_a_metrics_folder_that_does_not_exist_yet_is_created(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM, tmp_path: Path
) -> None:
    # As PROMETHEUS_MULTIPROC_DIR=/run/<RuntimeDirectory>/metrics would be under systemd.
    folder = tmp_path / "run" / "metrics"
    gateway = start_gateway(
        workers=2, MODEL_ROUTE_chat=chat_upstream.url, METRICS_PUBLIC="true", PROMETHEUS_MULTIPROC_DIR=str(folder)
    )
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    scrape = httpx.get(f"{gateway.url}/metrics").text
    assert _sample(scrape, 'gateway_requests_total{endpoint="/v1/chat/completions",method="POST",status="200"}') == 1
    assert list(folder.glob("*.db"))  # the workers' files are where the operator said


def test_api_keys(start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM) -> None:
    gateway = start_gateway(workers=1, MODEL_ROUTE_chat=chat_upstream.url, API_KEY="key-one,key-two")
    url = f"{gateway.url}/v1/chat/completions"
    missing = httpx.post(url, json=CHAT)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert httpx.post(url, json=CHAT, headers={"X-API-Key": "wrong"}).status_code == 401
    assert chat_upstream.stats()["requests"].get("/v1/chat/completions", 0) == 0  # rejected: never upstream
    assert httpx.post(url, json=CHAT, headers={"X-API-Key": "key-one"}).status_code == 200
    assert httpx.post(url, json=CHAT, headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    assert httpx.get(f"{gateway.url}/metrics", headers={"X-API-Key": "key-two"}).status_code == 200
    assert httpx.get(f"{gateway.url}/docs/openapi.json").status_code == 200
    assert "key-one" not in gateway.output() and "key-two" not in gateway.output()


def test_auth_can_be_turned_off_and_metrics_made_public(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(
        workers=1, MODEL_ROUTE_chat=chat_upstream.url, API_KEY="k", AUTH_REQUIRED="false", METRICS_PUBLIC="true"
    )
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT).status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200
    hidden = start_gateway(workers=1, MODEL_ROUTE_chat=chat_upstream.url, PROMETHEUS_ENABLE="false")
    assert httpx.get(f"{hidden.url}/metrics").status_code == 404


def test_cors_preflight_needs_no_key_and_exposes_our_headers(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(
        workers=1,
        MODEL_ROUTE_chat=chat_upstream.url,
        API_KEY="k",
        ALLOW_ORIGINS="http://app.test",
        RATE_LIMIT_PER_MIN="100",
    )
    preflight = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={
            "Origin": "http://app.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://app.test"
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Origin": "http://app.test", "Authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.test"
    exposed = set(response.headers["access-control-expose-headers"].split(","))
    assert {"x-request-id", "x-ratelimit-remaining", "retry-after"} <= exposed
    other = httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_one_json_access_line_per_request_without_prompt_text(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(workers=2, MODEL_ROUTE_chat=chat_upstream.url)
    httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "log-test-1"})
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Request-ID": "log-test-2"},
    ) as r:
        r.read()
    # Failures say why: a JSON error's code, and a stream's in-band one.
    httpx.post(
        f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "log-test-3", "X-Model-Key": "nope"}
    )
    dropped = {**CHAT, "stream": True, "fake": {"drop_after": 2, "chunks": 6}}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=dropped, headers={"X-Request-ID": "log-test-4"}
    ) as r:
        r.read()

    # A stream's line is written just after its last byte: give the worker a moment.
    deadline = time.monotonic() + 5
    while not {"log-test-2", "log-test-4"} <= gateway.access_lines().keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    access = gateway.access_lines()
    for request_id in ("log-test-1", "log-test-2"):
        line = access[request_id]
        assert line["status"] == 200 and line["upstream_status"] == 200 and line["error"] is None
        assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
        assert line["route"] == "chat" and line["model"] == "tiny-llama"
        assert line["client_ip"] == "127.0.0.1" and line["duration_ms"] >= 0 and re.match(r"\d{4}-", line["time"])
    assert (access["log-test-3"]["status"], access["log-test-3"]["error"]) == (404, "unknown_model_key")
    assert (access["log-test-4"]["status"], access["log-test-4"]["error"]) == (200, "upstream_protocol_error")
    assert "secret prompt text" not in gateway.output()


def test_a_burst_of_new_connections_is_spread_over_the_workers(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(workers=2, MODEL_ROUTE_chat=chat_upstream.url)
    # 64 clients connect at once, then each asks which worker answers it.
    clients = [socket.create_connection(("127.0.0.1", gateway.port), timeout=5) for _ in range(64)]
    workers: Counter[int] = Counter()
    try:
        for client in clients:
            client.sendall(b"GET /api/routes HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        for client in clients:
            with client.makefile("rb") as answer:
                head, _, body = answer.read().partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            workers[orjson.loads(body)["worker"]] += 1
    finally:
        for client in clients:
            client.close()
    # Each worker accepts on a socket of its own and the kernel spreads connections by address:
    # 32 ± 4 each. With one shared socket, whichever worker woke first took 54 to 56 of them.
    assert len(workers) == 2 and min(workers.values()) >= 12, workers


@pytest.mark.parametrize("pin", [True, False])
def test_pinned_workers_each_run_on_a_cpu_of_their_own(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM, pin: bool
) -> None:
    gateway = start_gateway(workers=2, MODEL_ROUTE_chat=chat_upstream.url, PIN_WORKERS=str(pin).lower())
    workers: set[int] = set()
    for _ in range(200):  # new connections land on either worker
        workers.add(httpx.get(f"{gateway.url}/api/routes").json()["worker"])
        if len(workers) == 2:
            break
    assert len(workers) == 2
    ours = os.sched_getaffinity(0)
    cpus = [os.sched_getaffinity(pid) for pid in workers]
    if pin:
        assert all(len(each) == 1 and each <= ours for each in cpus)
        assert len(ours) < 2 or cpus[0] != cpus[1]
    else:
        assert cpus == [ours, ours]
