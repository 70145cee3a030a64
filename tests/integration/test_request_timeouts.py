"""A client that trickles its request, against a real gateway (gateway/patches/sanic_protocol.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import orjson

from tests.procs import FakeVLLM, Gateway

# Each test gives up after this long: far above the 1 s timeouts it sets, far below Sanic's own 60 s.
WAIT_SECONDS = 6.0


def _connect(gateway: Gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT_SECONDS)
    sock.settimeout(0.2)
    return sock


def _answer(sock: socket.socket, trickle: bytes = b"") -> tuple[bytes, float]:
    """What the gateway sends until it closes the connection, sending `trickle` a byte at a time
    in between; and how long that took. Bounded by WAIT_SECONDS."""
    started = time.monotonic()
    received = b""
    while time.monotonic() - started < WAIT_SECONDS:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:  # closed by the gateway
                trickle = b""
            trickle = trickle[1:]
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def _status_and_error(answer: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)["error"]


def test_a_trickled_request_head_gets_408_at_its_deadline(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    # With an API key and a rate limit: neither may turn the 408 into a 401 or a 429 (the head
    # never arrived, so there is no key to check).
    gateway = start_gateway(
        workers=1,
        MODEL_ROUTE_chat=chat_upstream.url,
        REQUEST_HEAD_TIMEOUT_SECONDS="1",
        API_KEY="secret",
        RATE_LIMIT_PER_MIN="1",
    )
    with _connect(gateway) as sock:
        sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: gateway\r\nX-API-Key: secret\r\n")
        # A byte every 0.2 s: Sanic's own timeout, counted from the last byte, never fired.
        answer, seconds = _answer(sock, trickle=b"X-Slow: " + b"a" * 200)
    assert answer, f"no answer within {WAIT_SECONDS} s while the head trickled in"
    status, error = _status_and_error(answer)
    assert status == 408 and error["code"] == "request_timeout"
    assert "REQUEST_HEAD_TIMEOUT_SECONDS" in error["message"]
    assert seconds < WAIT_SECONDS


def test_a_stalled_request_body_gets_408(start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM) -> None:
    gateway = start_gateway(workers=1, MODEL_ROUTE_chat=chat_upstream.url, REQUEST_BODY_TIMEOUT_SECONDS="1")
    sent_before = chat_upstream.stats()["requests"].get("/v1/chat/completions", 0)
    with _connect(gateway) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        answer, _ = _answer(sock)
    assert answer, f"no answer within {WAIT_SECONDS} s to a body that stalled"
    status, error = _status_and_error(answer)
    assert status == 408 and "REQUEST_BODY_TIMEOUT_SECONDS" in error["message"]
    # Half a body is never sent upstream.
    assert chat_upstream.stats()["requests"].get("/v1/chat/completions", 0) == sent_before


def test_a_slow_but_steady_request_is_served(start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM) -> None:
    gateway = start_gateway(
        workers=1,
        MODEL_ROUTE_chat=chat_upstream.url,
        REQUEST_HEAD_TIMEOUT_SECONDS="2",
        REQUEST_BODY_TIMEOUT_SECONDS="1",
    )
    body = orjson.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(gateway) as sock:
        for part in (head[:20], head[20:], body[:10], body[10:30], body[30:]):
            sock.sendall(part)
            time.sleep(0.3)  # pauses well inside both limits; the body takes longer than one in all
        answer, _ = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
