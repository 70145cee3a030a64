"""
What the gateway adds in front of vLLM, measured against the fake vLLM server (scripts/fake_vllm.py).
Every measurement runs straight against the fake first (the "direct" column: the fake's own
figures), then through the gateway; one markdown table sums them up.

    .venv/bin/python scripts/bench.py [--quick] [--json FILE] [--workers 2] [--quiet-logs]
        [--scenarios latency,throughput,stream,idle[,idle10k]] [--gateway-env KEY=VAL ...]
        [--ref COMMIT] [--wait-quiet SECONDS] [--profile FILE.svg|.txt|.json]

Scenarios (the default is the first four; idle10k runs only when named):
  latency     a. 1 connection, sequential non-streaming POSTs after a warm-up: p50/p99, CPU/request.
  throughput  b. `wrk -t2 -c64 --latency -s scripts/bench_post.lua`: req/s, p99, and CPU ms per
              request of the gateway (utime+stime of its main process and all its children, the
              workers) and of the fake. Without wrk, an asyncio client in a process of its own
              keeps 64 connections busy instead (slower than wrk: it takes more of the CPU).
  stream      c. 50 concurrent streams of 64 chunks 10 ms apart (per-request fake knobs): time to
              the first content event (from request send) p50/p99, chunk rates.
  idle        d. 1,000 concurrent streams whose upstream sends headers, then stays silent: time to
              response headers (from connect), clients served within 1 s, listen queue overflows,
              memory (PSS) per stream, upstream connections still open 3 s after the clients left.
  idle10k     e. the same with 10,000 streams, opened 1,000 at a time.
Chat scenarios run on /v1/chat/completions and /api/chat (/api/chat/stream); the direct run of an
/api path is the fake's /v1/chat/completions with the equivalent body. Each measurement also
reports how much CPU other processes took meanwhile: on a shared machine, that is the noise.

Everything stays on 127.0.0.1 (free ports). The gateway runs as `python -m gateway` from an empty
folder with WORKERS=2, MODEL_ROUTE_bench=<fake>/v1, DEFAULT_MODEL_KEY=bench, RATE_LIMIT_PER_MIN=0
and its default INFO access log, to a temp file (--quiet-logs: LOG_LEVEL=WARNING). Both servers
are stopped at the end (SIGTERM, bounded waits). The code measured is the working tree's (HEAD is
printed, flagged when gateway/ has uncommitted changes), or with --ref that commit's gateway/,
exported with `git archive` to a temp folder. A full run takes under 2 minutes, --quick under 1;
--wait-quiet lets a run on a busy machine stretch to SECONDS. Best with `wrk`; --profile needs py-spy
(it samples the busiest worker during the gateway's /v1 throughput run, slowing it a little).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "bench-model"
SCENARIOS = ("latency", "throughput", "stream", "idle", "idle10k")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT = "Say hello in one short sentence."
CONTENT = b'{"content":"'  # the fake's content deltas; its role chunk has `"role":"assistant","content":""`
DONE = b"data: [DONE]"
_TAIL = max(len(CONTENT), len(DONE)) - 1  # bytes kept between reads, so no match is cut or counted twice
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE).search
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


# --- bodies ------------------------------------------------------------------------------------
class Target(NamedTuple):
    label: str
    direct_path: str
    direct_body: bytes
    path: str  # through the gateway
    body: bytes


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def chat_targets(stream: bool, **fake: Any) -> list[Target]:
    knobs = {"fake": fake} if fake else {}
    messages = [{"role": "user", "content": PROMPT}]
    v1 = dump({"model": MODEL, "messages": messages, "max_tokens": 2048, "stream": stream, **knobs})
    api_direct = dump({"messages": messages, "max_tokens": 2048, "stream": stream, **knobs})
    api = dump({"message": PROMPT, "max_tokens": 2048, **knobs})
    api_path = "/api/chat/stream" if stream else "/api/chat"
    return [Target("/v1/chat/completions", "/v1/chat/completions", v1, "/v1/chat/completions", v1),
            Target(api_path, "/v1/chat/completions", api_direct, api_path, api)]  # fmt: skip


# --- processes ---------------------------------------------------------------------------------
class Server:
    """A child process in its own session, output to a temp file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.name, self.port = name, 0
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def pids(self) -> list[int]:
        """This process and all its descendants."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.popen.pid]
        while todo:
            found.append(pid := todo.pop())
            todo.extend(children.get(pid, ()))
        return found

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{Path(self.log.name).read_text()[-3000:]}")
            try:
                with _opener.open(f"http://{HOST}:{self.port}{path}", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout:g} s (log: {self.log.name})")

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {timeout:g} s: SIGKILL", file=sys.stderr)
        try:  # workers that outlived their main process, or one that hung
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_fake() -> Server:
    port = free_port()
    argv = [sys.executable, str(ROOT / "scripts" / "fake_vllm.py"), "--port", str(port), "--quiet", "--model", MODEL]
    fake = Server("fake-vllm", argv, dict(os.environ), str(ROOT))
    fake.port = port
    fake.wait_ready("/health")
    return fake


def gateway_env(code: str, port: int, fake: Server, workers: int) -> dict[str, str]:
    """The environment a measured gateway runs with: `code`'s gateway/ on `port`, one route to `fake`."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if key in os.environ}
    env.update(PYTHONPATH=code, API_HOST=HOST, API_PORT=str(port), WORKERS=str(workers),
               MODEL_ROUTE_bench=f"http://{HOST}:{fake.port}/v1", DEFAULT_MODEL_KEY="bench", RATE_LIMIT_PER_MIN="0")  # fmt: skip
    return env


def start_gateway(fake: Server, args: argparse.Namespace) -> Server:
    port = free_port()
    env = gateway_env(args.code, port, fake, args.workers)
    if args.quiet_logs:
        env["LOG_LEVEL"] = "WARNING"
    env.update(item.split("=", 1) for item in args.gateway_env)
    args.cwd = tempfile.mkdtemp(prefix="bench-gateway-cwd-")  # no .env there
    gateway = Server("gateway", [sys.executable, "-m", "gateway"], env, args.cwd)
    gateway.port = port
    gateway.wait_ready("/health")
    deadline, seen = time.monotonic() + 15, set[int]()  # every worker answering, as far as we can tell
    while len(seen) < args.workers and time.monotonic() < deadline:
        seen.add(int(get_json(port, "/api/routes")["worker"]))
        time.sleep(0.02)
    time.sleep(1.0)
    return gateway


# --- /proc figures -----------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(re.search(r"^Pss:\s+(\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return total


def listen_overflows() -> int:
    """The machine's count of connections dropped because a listen queue (backlog) was full."""
    names, values = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()[:2]]
    return int(values[names.index("ListenOverflows")])


def own_cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (wrk, py-spy)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def machine_busy_pct(seconds: float) -> float:
    before = machine_ticks()
    time.sleep(seconds)
    busy, total = (after - start for after, start in zip(machine_ticks(), before))
    return 100 * busy / max(total, 1)


# --- a minimal HTTP/1.1 client: cheap, and it sees exactly when bytes arrive ------------------------
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


def get_json(port: int, path: str) -> dict[str, Any]:
    with _opener.open(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


# --- results -----------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    metric: str
    direct: float | None
    gateway: float | None
    compare: str = "added"  # "added" (gateway - direct), "ratio" (gateway / direct) or ""
    digits: int = 2

    def cells(self) -> list[str]:
        def fmt(value: float | None) -> str:
            return "—" if value is None else f"{value:,.{self.digits}f}"

        delta = ""
        if self.direct is not None and self.gateway is not None:
            if self.compare == "added":
                delta = f"{self.gateway - self.direct:+,.{self.digits}f}"
            elif self.compare == "ratio" and self.direct:
                delta = f"×{self.gateway / self.direct:.2f}"
        return [self.scenario, self.metric, fmt(self.direct), fmt(self.gateway), delta]


Measure = Callable[[Server, str, bytes], dict[str, Any]]
# (metric, key in the measurement, comparison, digits)
Spec = tuple[str, str, str, int]


@dataclass
class Bench:
    args: argparse.Namespace
    fake: Server
    gateway: Server
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    patience: float = 0.0  # until this monotonic time, wait for quiet and measure again (--wait-quiet)

    def __post_init__(self) -> None:
        self.patience = time.monotonic() + self.args.wait_quiet

    def both(self, scenario: str, target: Target, measure: Measure, specs: list[Spec], again: bool = True) -> None:
        """Measure one target direct, then through the gateway; add its rows and raw figures."""
        label, direct_path, direct_body, path, body = target
        direct = self.noted(measure, self.fake, direct_path, direct_body, again)
        via = self.noted(measure, self.gateway, path, body, again)
        self.raw[f"{scenario}, {label}"] = {"direct": direct, "gateway": via}
        print(f"  {scenario}, {label}:\n    direct  {direct}\n    gateway {via}", flush=True)
        for metric, key, compare, digits in [*specs, ("other processes' CPU (% of machine)", "others_cpu_pct", "", 0)]:
            self.rows.append(Row(f"{scenario}, {label}", metric, direct.get(key), via.get(key), compare, digits))

    def noted(self, measure: Measure, server: Server, path: str, body: bytes, again: bool) -> dict[str, Any]:
        """`measure`, noting how much CPU the rest of the machine took meanwhile (noise: vLLM, tests...).

        With --wait-quiet, until the run is that old: wait for an idle machine first, and measure
        `again` when others took over 10% of it; the least disturbed result is kept.
        """
        best: dict[str, Any] | None = None
        while best is None or (again and best["others_cpu_pct"] > 10 and time.monotonic() < self.patience):
            while time.monotonic() < self.patience and machine_busy_pct(1.0) > 10:  # our servers are idle now
                pass
            pids = self.gateway.pids() + self.fake.pids()
            ours, ticks, started = cpu_seconds(pids) + own_cpu_seconds(), machine_ticks()[0], time.monotonic()
            result = measure(server, path, body)
            ours = cpu_seconds(pids) + own_cpu_seconds() - ours
            busy, elapsed = (machine_ticks()[0] - ticks) / CLK_TCK, time.monotonic() - started
            result["others_cpu_pct"] = max(0.0, 100 * (busy - ours) / (elapsed * (os.cpu_count() or 1)))
            best = result if best is None or result["others_cpu_pct"] < best["others_cpu_pct"] else best
        return best

    def latency(self) -> None:
        """a. Added latency at 1 connection."""
        count, warmup = (500, 100) if self.args.quick else (2000, 200)

        def measure(server: Server, path: str, body: bytes) -> dict[str, Any]:
            pids = server.pids()
            cpu = cpu_seconds(pids)
            result: dict[str, Any] = run_async(sequential(server.port, path, body, count, warmup))
            result["cpu_ms"] = (cpu_seconds(pids) - cpu) * 1000 / (count + warmup)
            return result

        for target in chat_targets(stream=False):
            self.both("a. 1 conn", target, measure, [("p50 latency (ms)", "p50_ms", "added", 3),
                      ("p99 latency (ms)", "p99_ms", "added", 3), ("CPU ms/request (fake / gateway)", "cpu_ms", "", 3),
                      ("errors", "errors", "", 0)])  # fmt: skip

    def throughput(self) -> None:
        """b. Throughput at 64 connections, with CPU time per request."""
        for target in chat_targets(stream=False):
            self.both("b. 64 conns", target, self.load, [("requests/s", "rps", "ratio", 0),
                      ("p99 latency (ms)", "p99_ms", "added", 2), ("gateway CPU ms/request", "gateway_cpu_ms", "", 3),
                      ("fake CPU ms/request", "fake_cpu_ms", "", 3),
                      ("non-2xx + socket errors", "errors", "", 0)])  # fmt: skip

    def load(self, server: Server, path: str, body: bytes) -> dict[str, Any]:
        seconds, url = 3 if self.args.quick else 10, f"http://{HOST}:{server.port}{path}"
        run_load = run_wrk if self.args.wrk else run_client
        run_load(url, body, 1)  # warm-up: connection pools, models cache
        gateway_pids, fake_pids, profiler = self.gateway.pids(), self.fake.pids(), None
        if self.args.profile and server is self.gateway and path.startswith("/v1"):
            worker = max(gateway_pids, key=lambda pid: cpu_seconds([pid]))  # the busiest: a worker
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            form = {".txt": "raw", ".json": "speedscope"}.get(Path(self.args.profile).suffix, "flamegraph")
            profiler = subprocess.Popen([py_spy, "record", "--nonblocking", "-p", str(worker), "-d", str(seconds),
                                         "-f", form, "-o", self.args.profile], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        gateway_cpu, fake_cpu = cpu_seconds(gateway_pids), cpu_seconds(fake_pids)
        result = run_load(url, body, seconds)
        gateway_cpu, fake_cpu = cpu_seconds(gateway_pids) - gateway_cpu, cpu_seconds(fake_pids) - fake_cpu
        if profiler is not None:
            profiler.wait(30)
        done = max(result["requests"], 1)
        result.update(gateway_cpu_ms=gateway_cpu * 1000 / done if server is self.gateway else None,
                      fake_cpu_ms=fake_cpu * 1000 / done)  # fmt: skip
        return result

    def stream(self) -> None:
        """c. 50 concurrent streams of 64 chunks, 10 ms apart."""
        rounds = 2 if self.args.quick else 6  # a round is one burst of 50: its p50 swings by milliseconds

        def measure(server: Server, path: str, body: bytes) -> dict[str, Any]:
            return run_async(streams(server.port, path, body, 50, rounds))  # type: ignore[no-any-return]

        for target in chat_targets(stream=True, chunks=64, chunk_interval=0.01):
            self.both("c. 50 streams", target, measure, [("first chunk p50 (ms)", "ttfc_p50_ms", "added", 2),
                      ("first chunk p99 (ms)", "ttfc_p99_ms", "added", 2),
                      ("chunks/s per stream", "rate_per_stream", "ratio", 1), ("chunks/s total", "rate_total", "ratio", 0),
                      ("failed streams", "errors", "", 0)])  # fmt: skip

    def idle(self, count: int = 1000, batch: int = 1000) -> None:
        """d. (and e.) Idle streams: headers, then silence until the clients leave.

        Never measured again (--wait-quiet): memory that a first try freed would hide the second's.
        """

        def measure(server: Server, path: str, body: bytes) -> dict[str, Any]:
            return run_async(idle_streams(server, self.fake.port, path, body, count, batch))  # type: ignore[no-any-return]

        target = chat_targets(stream=True, stall_after=0, stall_seconds=600)[0]
        self.both(f"{'d' if count <= 1000 else 'e'}. {count:,} idle streams", target, measure,
                  [("time to headers p50 (ms)", "headers_p50_ms", "added", 1),
                   ("time to headers p99 (ms)", "headers_p99_ms", "added", 1),
                   ("time to headers max (ms)", "headers_max_ms", "added", 1),
                   ("clients with headers within 1 s", "within_1s", "", 0),
                   ("listen queue overflows (machine)", "listen_overflows", "", 0),
                   ("seconds to open them all", "opened_in_s", "", 2), ("errors", "errors", "", 0),
                   ("PSS KiB per stream (fake / gateway)", "pss_kib_per_stream", "", 1),
                   ("upstream conns left 3 s after close", "upstream_left", "", 0),
                   ("seconds until they were all closed (— : over 30)", "upstream_closed_after_s", "", 2)],
                  again=False)  # fmt: skip


def run_async(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def run_wrk(url: str, body: bytes, seconds: int) -> dict[str, Any]:
    argv = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(ROOT / "scripts" / "bench_post.lua"), url]
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


# --- the run -----------------------------------------------------------------------------------
def export_gateway(ref: str) -> tuple[str, str]:
    """`gateway/` as of commit `ref`, in a temp folder (the repository is only read): (folder, commit)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    folder = tempfile.mkdtemp(prefix=f"bench-gateway-{commit[:8]}-")
    archive = subprocess.run(["git", "archive", commit, "gateway"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder, commit


def machine(ref: str | None) -> dict[str, Any]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    git = functools.partial(subprocess.run, cwd=ROOT, capture_output=True, text=True, check=False)
    commit, dirty = git(["git", "rev-parse", "HEAD"]).stdout.strip(), git(["git", "status", "--porcelain", "gateway"])
    if ref is not None:
        commit, dirty.stdout = ref, ""
    vllm = [f"{pid}" for pid in os.listdir("/proc") if pid.isdigit() and _is_vllm(pid)]
    return {"nproc": os.cpu_count(), "cpu": cpu.group(1) if cpu else "?", "kernel": os.uname().release,
            "commit": commit, "gateway_dirty": bool(dirty.stdout.strip()), "vllm_pids": vllm,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3], "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "python": f"{platform.python_version()} ({os.path.realpath(sys.executable)})"}  # fmt: skip


def _is_vllm(pid: str) -> bool:
    try:
        return b"vllm.entrypoints" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def log_errors(path: str) -> int:
    """Lines of a server's log that report an error or a traceback."""
    with open(path, "rb") as log:
        return sum(b'"level":"ERROR"' in line or line.startswith(b"Traceback") for line in log)


def table(rows: list[Row]) -> str:
    lines = ["| scenario | metric | direct (fake) | through gateway | added / ratio |", "|---|---|--:|--:|--:|"]
    return "\n".join(lines + ["| " + " | ".join(row.cells()) + " |" for row in rows])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (well under a minute in all)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--gateway-env", metavar="KEY=VAL", action="append", default=[], help="repeatable")
    parser.add_argument("--workers", type=int, default=2, help="gateway WORKERS (default 2)")
    parser.add_argument("--scenarios", default="latency,throughput,stream,idle", help=f"among {','.join(SCENARIOS)}")
    parser.add_argument("--quiet-logs", action="store_true", help="LOG_LEVEL=WARNING: no access log")
    parser.add_argument("--wait-quiet", metavar="SECONDS", type=float, default=0.0,
                        help="shared machines: wait for an idle machine before each measurement, and measure "
                        "again when others took the CPU, while the run is younger than SECONDS")  # fmt: skip
    parser.add_argument("--ref", metavar="COMMIT", help="benchmark gateway/ as of this commit, not the working tree")
    parser.add_argument("--profile", metavar="FILE", help="py-spy profile of a worker during throughput /v1: "
                        "FILE.svg flame graph, .txt collapsed stacks, .json speedscope")  # fmt: skip
    args = parser.parse_args()
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    bad_env = [item for item in args.gateway_env if "=" not in item]
    if unknown or bad_env:
        parser.error(f"unknown scenarios {sorted(unknown)}" if unknown else f"not KEY=VAL: {bad_env}")
    args.wrk = shutil.which("wrk") is not None
    args.load = "wrk" if args.wrk else "asyncio client (no wrk on PATH: apt-get install wrk)"
    return args


def _deadline(signum: int, frame: Any) -> None:
    raise TimeoutError("the benchmark ran past its time limit")


def main() -> None:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # idle streams: thousands of sockets here
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(int(max(300 if args.quick else 600, args.wait_quiet + 300)))  # the whole run, start and stop included
    args.code = str(ROOT)
    if args.ref:
        args.code, args.ref = export_gateway(args.ref)
    info = machine(args.ref)
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, load {' '.join(info['loadavg'])}")
    print(f"commit: {info['commit']}" + (" (gateway/ has uncommitted changes)" if info["gateway_dirty"] else ""))
    print(f"python: {info['python']}, for the fake and the gateway")
    if info["vllm_pids"]:
        print(f"WARNING: vLLM servers are running (pids {', '.join(info['vllm_pids'])}): figures are disturbed")
    fake = gateway = None
    succeeded = False
    try:
        fake = start_fake()
        gateway = start_gateway(fake, args)
        print(f"fake vLLM :{fake.port} (log {fake.log.name}), gateway :{gateway.port} with {args.workers} workers "
              f"(pids {gateway.pids()}, log {gateway.log.name})", flush=True)  # fmt: skip
        bench = Bench(args, fake, gateway)
        for name in args.scenarios:
            started = time.monotonic()
            if name == "idle10k":
                bench.idle(10_000, 1000)
            else:
                getattr(bench, name)()
            print(f"{name}: {time.monotonic() - started:.1f} s", flush=True)
        succeeded = True
    finally:
        signal.alarm(0)
        for server in (gateway, fake):
            if server is not None:
                server.stop()
                if succeeded:  # the access log of a full run is tens of MB; kept when something failed
                    info[f"{server.name}_log_errors"] = log_errors(server.log.name)
                    os.unlink(server.log.name)
        for folder in {getattr(args, "cwd", None), args.code} - {None, str(ROOT)}:
            shutil.rmtree(folder, ignore_errors=True)
    if info.get("gateway_log_errors") or info.get("fake-vllm_log_errors"):
        print(f"WARNING: errors in the server logs: {info['gateway_log_errors']} (gateway), "
              f"{info['fake-vllm_log_errors']} (fake)")  # fmt: skip
    extra = f", gateway env {args.gateway_env}" if args.gateway_env else ""
    print(f"\n{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, commit {info['commit'][:12]}"
          f"{' + uncommitted gateway/ changes' if info['gateway_dirty'] else ''}, {args.workers} workers, "
          f"access log {'off' if args.quiet_logs else 'on'}, load: {args.load}{extra}"
          f"{', vLLM running' if info['vllm_pids'] else ''}{', quick' if args.quick else ''}\n")  # fmt: skip
    print(table(bench.rows))
    if args.json:
        report = {"machine": info, "args": vars(args), "rows": [asdict(row) for row in bench.rows], "raw": bench.raw}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
