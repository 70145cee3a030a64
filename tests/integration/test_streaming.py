"""Streaming with real processes: timing, heartbeats, disconnects, in-band errors, shutdown."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.procs import FakeVLLM, Gateway, free_port

MESSAGES = [{"role": "user", "content": "Say hello"}]


def chat(stream: bool = True, **fake: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny-llama", "messages": MESSAGES, "stream": stream}
    if fake:
        body["fake"] = fake  # the fake vLLM's per-request knobs
    return body


def read_stream(
    url: str, body: dict[str, Any], timeout: float = 30.0
) -> tuple[httpx.Response, list[tuple[float, str]]]:
    """POST and collect (seconds since the request, line) for every non-empty line."""
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    with httpx.stream("POST", url, json=body, timeout=timeout) as response:
        for line in response.iter_lines():
            if line:
                lines.append((time.monotonic() - started, line))
    return response, lines


def data_lines(lines: list[tuple[float, str]]) -> list[str]:
    return [line for _, line in lines if line.startswith("data: ")]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module")
def gateway(chat_upstream: FakeVLLM) -> Iterator[Gateway]:
    gateway = Gateway({"MODEL_ROUTE_chat": chat_upstream.url, "SSE_HEARTBEAT_SECONDS": "1"})
    yield gateway
    assert gateway.stop() == 0


def test_events_are_relayed_as_they_arrive(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    response, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(chunks=6, chunk_interval=0.3))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    data = data_lines(lines)
    assert data[-1] == "data: [DONE]" and data.count("data: [DONE]") == 1
    assert len(data) == 1 + 6 + 1  # role chunk, six tokens, [DONE]
    first_token_at = lines[1][0]
    done_at = lines[-1][0]
    assert done_at - first_token_at > 1.0  # the first token did not wait for the last one


def test_heartbeats_while_the_upstream_prepares_its_headers(gateway: Gateway) -> None:
    response, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(headers_delay=3.5, chunks=2))
    assert response.status_code == 200
    keepalives = [at for at, line in lines if line == ": keepalive"]
    first_data = next(at for at, line in lines if line.startswith("data: "))
    assert len([at for at in keepalives if at < first_data]) >= 2
    assert data_lines(lines)[-1] == "data: [DONE]"


def test_heartbeats_while_the_upstream_is_silent_between_chunks(gateway: Gateway) -> None:
    _, lines = read_stream(
        f"{gateway.url}/api/chat/stream", {"message": "hi", "fake": {"stall_after": 2, "stall_seconds": 3.5}}
    )
    kinds = ["beat" if line == ": keepalive" else "data" for _, line in lines]
    # role chunk, two tokens, then the silence filled with keepalives, then the rest
    assert kinds[:3] == ["data"] * 3
    assert kinds[3:5] == ["beat", "beat"]
    assert data_lines(lines)[-1] == "data: [DONE]"


def test_finished_streams_give_their_upstream_connection_back(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    # Each client hangs up the moment it has its [DONE], and the end of the upstream's body comes
    # a little after that [DONE]: the gateway still reads it, and reuses the connection.
    body = orjson.dumps(chat(chunks=2, end_delay=0.05))

    def chats_completed() -> int:
        # The gateway may refresh its /models listing meanwhile (routing checks X-Model-Key's
        # route): the fake counts that response as completed too.
        stats = chat_upstream.stats()
        return int(stats["completed"]) - int(stats["requests"].get("/v1/models", 0))

    for done in range(1, 11):
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nX-Model-Key: chat\r\n"
            f"X-Request-ID: finished-{done}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as client:
            client.sendall(request)
            received = b""
            while b"data: [DONE]" not in received and (data := client.recv(65536)):
                received += data
        assert received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in received
        # The fake counts a response once the end of its body is out; then the next one may start.
        assert wait_until(lambda: chats_completed() == done, timeout=2.0), (done, chat_upstream.stats())  # noqa: B023
    stats = chat_upstream.stats()
    assert stats["aborted"] == 0
    assert stats["connections"] <= 2, f"{stats['connections']} upstream connections for 10 streams over 2 workers"
    # They had the whole stream: complete requests, logged as 200 (not as cut short).
    assert wait_until(lambda: "finished-10" in gateway.access_lines(), timeout=2.0)
    assert [gateway.access_lines()[f"finished-{done}"]["status"] for done in range(1, 11)] == [200] * 10


def test_client_hang_up_closes_the_upstream_stream(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    body = chat(chunks=200, chunk_interval=0.05)
    headers = {"X-Request-ID": "hang-up-mid-stream"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break
    closed_at = time.time()
    assert wait_until(lambda: chat_upstream.stats()["aborted"] == 1, timeout=1.0)
    assert chat_upstream.stats()["last_abort_at"] - closed_at < 1.0
    # Logged as cut short by its client (nginx's 499), not as a complete 200.
    assert wait_until(lambda: "hang-up-mid-stream" in gateway.access_lines(), timeout=2.0)
    assert gateway.access_lines()["hang-up-mid-stream"]["status"] == 499


def test_abandoned_non_streaming_request_closes_the_upstream(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=chat(stream=False, latency=5.0), timeout=0.5)
    closed_at = time.time()
    assert wait_until(lambda: chat_upstream.stats()["aborted"] == 1, timeout=1.0)
    assert chat_upstream.stats()["last_abort_at"] - closed_at < 1.0


def test_upstream_dropping_mid_stream_gives_chunks_then_an_error_then_done(gateway: Gateway) -> None:
    response, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(drop_after=3, chunks=8))
    assert response.status_code == 200
    texts = [line for _, line in lines]
    assert len([line for line in texts[:4] if line.startswith("data: {")]) == 4  # role + 3 tokens
    assert texts[4] == "event: error"
    error = orjson.loads(texts[5].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_protocol_error" and error["message"]
    assert texts[6:] == ["data: [DONE]"]


def test_errors_before_the_stream_starts_are_plain_json(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={**chat(), "max_tokens": 100000})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={**chat(), "model": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert response.headers["content-type"] == "application/json"
    response = httpx.post(f"{gateway.url}/api/chat/stream", json={"message": "hi", "model": "nope"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "model_not_served"


def test_connection_refused_is_a_json_502(start_gateway: Callable[..., Gateway]) -> None:
    gateway = start_gateway(workers=1, MODEL_ROUTE_dead=f"http://127.0.0.1:{free_port()}/v1")
    response = httpx.post(f"{gateway.url}/api/chat/stream", json={"message": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_read_timeout_between_chunks_and_total_deadline_are_in_band(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(
        workers=1, MODEL_ROUTE_chat=chat_upstream.url, READ_TIMEOUT_SECONDS="1", SSE_HEARTBEAT_SECONDS="0.3"
    )
    # A generation that keeps producing is never cut by the read timeout...
    _, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(chunks=8, chunk_interval=0.4))
    assert data_lines(lines)[-1] == "data: [DONE]" and "event: error" not in [line for _, line in lines]
    # ...but a silence longer than it is.
    _, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(stall_after=1, stall_seconds=3))
    texts = [line for _, line in lines]
    assert "event: error" in texts
    assert orjson.loads(texts[texts.index("event: error") + 1][6:])["error"]["code"] == "upstream_timeout"
    assert texts[-1] == "data: [DONE]"

    gateway = start_gateway(workers=1, MODEL_ROUTE_chat=chat_upstream.url, TOTAL_TIMEOUT_SECONDS="1")
    _, lines = read_stream(f"{gateway.url}/v1/chat/completions", chat(chunks=20, chunk_interval=0.2))
    texts = [line for _, line in lines]
    assert lines[-1][0] < 2.0
    assert "event: error" in texts and texts[-1] == "data: [DONE]"


def test_openai_sdk_stream_yields_every_chunk(gateway: Gateway, chat_upstream: FakeVLLM) -> None:
    def chunks(base_url: str) -> list[Any]:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
        stream = client.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, stream=True, max_tokens=6, stream_options={"include_usage": True}
        )
        return list(stream)

    through, direct = chunks(f"{gateway.url}/v1"), chunks(chat_upstream.url)
    assert len(through) == len(direct) == 1 + 6 + 1
    assert [c.choices[0].delta.content if c.choices else None for c in through] == [
        c.choices[0].delta.content if c.choices else None for c in direct
    ]
    assert through[-1].usage is not None and through[-1].usage.completion_tokens == 6


def sigterm_during_stream(gateway: Gateway, upstream: FakeVLLM, body: dict[str, Any], delay: float) -> list[str]:
    """Read a stream in a thread, SIGTERM the gateway `delay` s after it began; its lines."""
    result: dict[str, Any] = {}

    def consume() -> None:
        result["response"], result["lines"] = read_stream(f"{gateway.url}/v1/chat/completions", body)

    reader = threading.Thread(target=consume)
    reader.start()
    assert wait_until(lambda: upstream.stats()["requests"].get("/v1/chat/completions", 0) == 1, timeout=5)
    time.sleep(delay)
    gateway.signal(signal.SIGTERM)
    reader.join(timeout=15)
    assert gateway.wait(timeout=15) == 0  # and the gateway exits cleanly
    return [line for _, line in result["lines"]]


def test_sigterm_lets_a_running_stream_finish(start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM) -> None:
    gateway = start_gateway(MODEL_ROUTE_chat=chat_upstream.url, GRACEFUL_SHUTDOWN_SECONDS="10")
    refused: list[bool] = []

    def connect_during_the_shutdown() -> None:
        # A new connection is refused at once, not left in the backlog until the gateway exits.
        assert wait_until(lambda: "Received signal SIGTERM" in gateway.output(), timeout=5)
        time.sleep(0.3)  # the workers close their copies of the listening socket as they stop
        try:
            socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()
            refused.append(False)
        except ConnectionRefusedError:
            refused.append(True)

    prober = threading.Thread(target=connect_during_the_shutdown)
    prober.start()
    lines = sigterm_during_stream(gateway, chat_upstream, chat(chunks=10, chunk_interval=0.2), delay=0.3)
    prober.join(timeout=10)
    data = [line for line in lines if line.startswith("data: ")]
    assert len(data) == 1 + 10 + 1 and data[-1] == "data: [DONE]"
    assert refused == [True]


def test_sigterm_ends_a_stream_longer_than_the_grace_period_in_band(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(MODEL_ROUTE_chat=chat_upstream.url, GRACEFUL_SHUTDOWN_SECONDS="1")
    texts = sigterm_during_stream(gateway, chat_upstream, chat(chunks=100, chunk_interval=0.1), delay=0.0)
    assert "event: error" in texts
    assert orjson.loads(texts[texts.index("event: error") + 1][6:])["error"]["code"] == "shutting_down"
    assert texts[-1] == "data: [DONE]"
