"""
The load a benchmark puts on a server, from a minimal HTTP/1.1 client that is cheap and sees
exactly when bytes arrive: sequential requests, a closed loop of keep-alive connections (or wrk
with bench_post.lua), bursts of streams and idle streams. Everything goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import os
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import HOST, Server, get_json, listen_overflows, pss_kib

CONTENT = b'{"content":"'  # the fake's content deltas; its role chunk has `"role":"assistant","content":""`
DONE = b"data: [DONE]"
_TAIL = max(len(CONTENT), len(DONE)) - 1  # bytes kept between reads, so no match is cut or counted twice
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE).search
WRK_SCRIPT = Path(__file__).resolve().with_name("bench_post.lua")


def raw_request(method: str, path: str, port: int, body: bytes = b"", close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if match := _CONTENT_LENGTH(head):
        return int(head[9:12]), await reader.readexactly(int(match.group(1)))
    body = b""  # chunked
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readexactly(2)
    return int(head[9:12]), body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def run_async(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def run_wrk(url: str, body: bytes, seconds: int) -> dict[str, Any]:
    argv = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT), url]
    out = subprocess.run(argv, env={**os.environ, "BENCH_BODY": body.decode()}, capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout  # fmt: skip

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else 0.0

    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = number(r"Non-2xx or 3xx responses:\s*(\d+)")
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": number(r"Requests/sec:\s*([\d.]+)"), "requests": int(number(r"(\d+) requests in")),
            "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None, "errors": int(errors),
            "error_lines": re.findall(r"(?:Non-2xx|Socket errors).*", out)}  # fmt: skip


def run_client(url: str, body: bytes, seconds: int, connections: int = 64) -> dict[str, Any]:
    """What `run_wrk` measures, from an asyncio client in a forked process of its own (as wrk is)."""
    parts = urllib.parse.urlsplit(url)
    port, path = int(parts.port or 80), parts.path
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_client_load, (port, path, body, seconds, connections))  # type: ignore[no-any-return]


def _client_load(port: int, path: str, body: bytes, seconds: int, connections: int) -> dict[str, Any]:
    return run_async(closed_loop(port, path, body, seconds, connections))  # type: ignore[no-any-return]


async def closed_loop(port: int, path: str, body: bytes, seconds: float, connections: int) -> dict[str, Any]:
    """`connections` keep-alive connections, each sending its next request as its last answer ends."""
    raw, samples, statuses = raw_request("POST", path, port, body), list[float](), list[int]()
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while (started := time.perf_counter()) < deadline:
                writer.write(raw)
                status, _ = await asyncio.wait_for(read_response(reader), 10)
                samples.append(time.perf_counter() - started)
                statuses.append(status)
        finally:
            writer.close()

    started = time.perf_counter()
    failures = await asyncio.gather(*(connection() for _ in range(connections)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    failed = [repr(failure) for failure in failures if failure is not None]
    non_2xx = sum(not 200 <= status < 300 for status in statuses)
    return {"rps": len(samples) / elapsed, "requests": len(samples), "p99_ms": pct(samples, 99) * 1000,
            "errors": non_2xx + len(failed), "error_lines": failed[:3]}  # fmt: skip


async def sequential(port: int, path: str, body: bytes, count: int, warmup: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(HOST, port)
    raw, samples, errors = raw_request("POST", path, port, body), [], 0
    for index in range(warmup + count):
        started = time.perf_counter()
        writer.write(raw)
        status, _ = await asyncio.wait_for(read_response(reader), 10)
        if index >= warmup:
            samples.append(time.perf_counter() - started)
            errors += status != 200
    writer.close()
    return {"p50_ms": pct(samples, 50) * 1000, "p99_ms": pct(samples, 99) * 1000, "errors": errors}


@dataclass
class StreamResult:
    status: int = 0
    first: float | None = None  # seconds from request send to the first content event
    last: float = 0.0
    events: int = 0
    done: bool = False


async def one_stream(port: int, raw: bytes) -> StreamResult:
    result = StreamResult()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        started = time.perf_counter()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        result.status = int(head[9:12])
        tail = b""
        while result.status == 200 and not result.done and (data := await reader.read(65536)):
            now, buffer = time.perf_counter() - started, tail + data
            if found := buffer.count(CONTENT):
                result.events, result.last = result.events + found, now
                result.first = now if result.first is None else result.first
            result.done, tail = DONE in buffer, buffer[-_TAIL:]
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
    return result


async def streams(port: int, path: str, body: bytes, concurrency: int, rounds: int) -> dict[str, Any]:
    warm = body.replace(b'"chunks":64', b'"chunks":4')
    await asyncio.gather(*(one_stream(port, raw_request("POST", path, port, warm)) for _ in range(10)))
    raw, results, wall = raw_request("POST", path, port, body), [], 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        results += await asyncio.wait_for(asyncio.gather(*(one_stream(port, raw) for _ in range(concurrency))), 60)
        wall += time.perf_counter() - started
    good = [r for r in results if r.done and r.events == 64 and r.first is not None]
    rates = [(r.events - 1) / (r.last - r.first) for r in good if r.last > r.first]  # type: ignore[operator]
    return {"ttfc_p50_ms": pct([r.first * 1000 for r in good], 50), "ttfc_p99_ms": pct([r.first * 1000 for r in good], 99),  # type: ignore[operator]
            "rate_per_stream": sum(rates) / max(len(rates), 1), "rate_total": sum(r.events for r in results) / wall,
            "errors": len(results) - len(good)}  # fmt: skip


async def idle_streams(server: Server, fake_port: int, path: str, body: bytes, count: int, batch: int) -> dict[str, Any]:  # fmt: skip
    raw, writers, connects, waits = raw_request("POST", path, server.port, body), [], [], []
    errors: collections.Counter[str] = collections.Counter()
    upstream_before, pss_before = get_json(fake_port, "/_fake/stats")["open_connections"], pss_kib(server.pids())
    overflows = listen_overflows()

    async def open_one() -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, server.port), 30)
            writers.append(writer)
            connects.append(time.perf_counter() - started)
            writer.write(raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if int(head[9:12]) != 200:
                raise OSError(f"status {head[9:12].decode()}")
            waits.append(time.perf_counter() - started)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            errors[str(exc) if type(exc) is OSError else type(exc).__name__] += 1

    started = time.perf_counter()
    for first in range(0, count, batch):
        await asyncio.gather(*(open_one() for _ in range(min(batch, count - first))))
    opened_in, overflows = time.perf_counter() - started, listen_overflows() - overflows
    await asyncio.sleep(1.0)
    pss_open, upstream_open = pss_kib(server.pids()), get_json(fake_port, "/_fake/stats")["open_connections"]
    for writer in writers:
        writer.transport.abort()
    closed, upstream_after, closed_after = time.monotonic(), None, None
    while (upstream_after is None or closed_after is None) and time.monotonic() < closed + 30:
        await asyncio.sleep(0.25)
        upstream_now, elapsed = get_json(fake_port, "/_fake/stats")["open_connections"], time.monotonic() - closed
        if upstream_after is None and elapsed >= 3.0:
            upstream_after = upstream_now
        if closed_after is None and upstream_now <= upstream_before:
            closed_after = elapsed
    ms = [w * 1000 for w in waits]
    return {"headers_p50_ms": pct(ms, 50), "headers_p99_ms": pct(ms, 99), "headers_max_ms": max(ms, default=None),
            "within_1s": sum(w < 1000 for w in ms), "listen_overflows": overflows, "errors": sum(errors.values()),
            "error_kinds": dict(errors), "upstream_closed_after_s": closed_after,
            "opened_in_s": opened_in, "connect_p99_ms": pct([c * 1000 for c in connects], 99),
            "pss_kib_per_stream": (pss_open - pss_before) / max(len(waits), 1), "upstream_open": upstream_open - upstream_before,
            "upstream_left": max(0, (upstream_after or 0) - upstream_before), "upstream_after": upstream_after,
            "upstream_before": upstream_before}  # fmt: skip
