"""scripts/fakevllm: the fake vLLM's prefix cache, its counters in /metrics, and its prefill time and queue."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from fakevllm.app import FakeVLLM
from fakevllm.common import Knobs
from fakevllm.prefix_cache import BLOCK_BYTES, BLOCK_TOKENS, chat_prompt
from fakevllm.wire import Connection

LONG = " ".join(f"word{i}" for i in range(300))  # about 2 KB: some 30 blocks


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeVLLM, httpx.AsyncClient]]:
    """The fake in this process, on a free port, and a client of it."""
    app = FakeVLLM(Knobs(), quiet=True)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(app), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield app, client
    server.close()
    for conn in list(app.connections):
        conn.transport.abort()
    await server.wait_closed()


async def chat(client: httpx.AsyncClient, messages: list[dict[str, Any]], **extra: Any) -> str:
    response = await client.post("/v1/chat/completions", json={"messages": messages, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await client.get("/_fake/stats")).json())


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}


async def first_token_seconds(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """From sending a streamed chat to its first content event."""
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["delta"].get("content"):
                return time.perf_counter() - started
    raise AssertionError("no content event")


async def until(client: httpx.AsyncClient, check: Any) -> dict[str, float]:
    """Read /metrics until `check` holds of it (each reading is a round trip: no sleeps)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        page = await metrics(client)
        if check(page):
            return page
    raise AssertionError(f"not reached: {page}")


async def test_the_next_turn_of_a_conversation_hits_its_prompt_and_reply(
    fake: tuple[FakeVLLM, httpx.AsyncClient],
) -> None:
    _, client = fake
    first = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": LONG}]
    reply = await chat(client, first)
    before = await stats(client)
    prompt_tokens = len(chat_prompt(first).encode()) // 4
    assert before["prefix_cache_queries"] == prompt_tokens
    assert before["prefix_cache_hits"] == 0

    second = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": [{"type": "text", "text": "More."}]},
    ]
    await chat(client, second)
    after = await stats(client)

    previous = len((chat_prompt(first) + reply).encode())
    hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
    assert hits == previous // BLOCK_BYTES * BLOCK_TOKENS
    assert previous // 4 - BLOCK_TOKENS < hits <= previous // 4
    assert after["prefix_cache_queries"] - before["prefix_cache_queries"] == len(chat_prompt(second).encode()) // 4


async def test_an_unrelated_prompt_misses(fake: tuple[FakeVLLM, httpx.AsyncClient]) -> None:
    _, client = fake
    await chat(client, [{"role": "user", "content": LONG}])
    before = await stats(client)
    await chat(client, [{"role": "user", "content": "Something else entirely. " * 20}])
    after = await stats(client)
    assert after["prefix_cache_hits"] == before["prefix_cache_hits"] == 0
    assert after["prefix_cache_queries"] > before["prefix_cache_queries"]

    reset = await client.post("/_fake/reset")  # empties the cache and zeroes the counters
    assert reset.status_code == 200
    assert (await stats(client))["prefix_cache_queries"] == 0
    await chat(client, [{"role": "user", "content": LONG}])
    assert (await stats(client))["prefix_cache_hits"] == 0


async def test_the_least_recently_used_blocks_are_evicted_beyond_the_capacity(
    fake: tuple[FakeVLLM, httpx.AsyncClient],
) -> None:
    _, client = fake
    (await client.post("/_fake/config", json={"prefix_cache_blocks": 4})).raise_for_status()

    async def hits(letter: str) -> int:
        """A 2-block prompt (its 1-token reply fills no block); the tokens found cached."""
        before = (await stats(client))["prefix_cache_hits"]
        response = await client.post("/v1/completions", json={"prompt": letter * 2 * BLOCK_BYTES, "max_tokens": 1})
        assert response.status_code == 200
        return int((await stats(client))["prefix_cache_hits"] - before)

    assert await hits("a") == 0
    assert await hits("b") == 0  # the cache is full: a a b b
    assert await hits("a") == 2 * BLOCK_TOKENS  # now b b a a
    assert await hits("c") == 0  # evicts b: a a c c
    assert await hits("a") == 2 * BLOCK_TOKENS
    assert await hits("b") == 0


async def test_metrics_show_the_counters_as_prometheus_text(fake: tuple[FakeVLLM, httpx.AsyncClient]) -> None:
    _, client = fake
    messages = [{"role": "user", "content": LONG}]
    await chat(client, messages)
    await chat(client, messages)
    response = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    counted = await stats(client)
    for name in ("queries", "hits"):
        family = families[f"vllm:prefix_cache_{name}"]
        assert family.type == "counter"
        [sample] = family.samples
        assert sample.name == f"vllm:prefix_cache_{name}_total"
        assert sample.labels == {"engine": "0", "model_name": "tiny-llama"}
        assert sample.value == counted[f"prefix_cache_{name}"] > 0
    assert "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{" in response.text


async def test_no_cache_counts_nothing_and_knobs_are_checked(fake: tuple[FakeVLLM, httpx.AsyncClient]) -> None:
    _, client = fake
    await chat(client, [{"role": "user", "content": LONG}], fake={"prefix_cache_blocks": 0})
    assert (await stats(client))["prefix_cache_queries"] == 0
    for knob, value in (("prefix_cache_blocks", -1), ("prefix_cache_blocks", 1.5), ("prefix_cache_blocks", True),
                        ("prefill_seconds_per_token", -0.1), ("prefill_base_seconds", "1")):  # fmt: skip
        response = await client.post("/_fake/config", json={knob: value})
        assert response.status_code == 400, (knob, value)
    config = await client.post("/_fake/config", json={"prefill_seconds_per_token": 0, "prefill_base_seconds": 0.5})
    assert config.json()["prefill_base_seconds"] == 0.5
    assert config.json()["prefill_seconds_per_token"] == 0.0


async def test_an_uncached_prompt_takes_longer_to_its_first_token(fake: tuple[FakeVLLM, httpx.AsyncClient]) -> None:
    _, client = fake
    body = {"messages": [{"role": "user", "content": LONG * 2}], "fake": {"prefill_seconds_per_token": 0.0002}}
    uncached = await first_token_seconds(client, body)  # about 1000 tokens: about 0.2 s
    cached = await first_token_seconds(client, body)  # all but the last block's few tokens
    assert uncached > 5 * cached


async def test_requests_queued_behind_a_prefill_are_waiting(fake: tuple[FakeVLLM, httpx.AsyncClient]) -> None:
    app, client = fake
    (await client.post("/_fake/config", json={"prefill_base_seconds": 0.001, "waiting": 3})).raise_for_status()
    await app.cache.lock.acquire()  # a long prefill under way
    messages = [{"role": "user", "content": "hello"}]
    queued = [asyncio.create_task(chat(client, messages)) for _ in range(2)]
    page = await until(client, lambda page: page["vllm:num_requests_waiting"] == 5)
    assert page["vllm:num_requests_running"] == 0  # waiting, not in the batch
    app.cache.lock.release()
    await asyncio.gather(*queued)
    page = await metrics(client)
    assert page["vllm:num_requests_waiting"] == 3
    assert (await stats(client))["prefix_cache_queries"] > 0


async def test_a_request_that_leaves_before_its_prefill_caches_nothing(
    fake: tuple[FakeVLLM, httpx.AsyncClient],
) -> None:
    app, client = fake
    body = {"messages": [{"role": "user", "content": LONG}], "fake": {"prefill_base_seconds": 0.001}}
    await app.cache.lock.acquire()
    leaving = asyncio.create_task(first_token_seconds(client, body))
    await until(client, lambda page: page["vllm:num_requests_waiting"] == 1)
    leaving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leaving
    deadline = time.monotonic() + 10
    while (await stats(client))["aborted"] == 0 and time.monotonic() < deadline:
        pass
    app.cache.lock.release()
    await first_token_seconds(client, body)
    assert (await stats(client))["prefix_cache_hits"] == 0
