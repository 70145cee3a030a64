from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from redis import Redis, RedisError

from tests.procs import FakeVLLM, Gateway

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def chat_upstream() -> Iterator[FakeVLLM]:
    fake = FakeVLLM("tiny-llama", "shared-model")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def embed_upstream() -> Iterator[FakeVLLM]:
    fake = FakeVLLM("all-MiniLM-L6-v2", "shared-model")
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    """Module-scoped fakes are reset before each test that uses them."""
    for name in ("chat_upstream", "embed_upstream"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., Gateway]]:
    """Start `python -m gateway` processes; each is stopped (SIGTERM) after the test."""
    started: list[Gateway] = []

    def start(workers: int = 2, **env: str) -> Gateway:
        gateway = Gateway({key: str(value) for key, value in env.items()}, workers=workers)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except RedisError:
        pytest.fail("integration tests need Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def replicas() -> Iterator[list[FakeVLLM]]:
    """Three fake replicas of one model, `tiny-llama`."""
    fakes = [FakeVLLM("tiny-llama") for _ in range(3)]
    yield fakes
    for fake in fakes:
        fake.stop()
