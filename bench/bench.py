"""
What the gateway adds in front of vLLM, measured against the fake vLLM server (scripts/fake_vllm.py).
Every measurement runs straight against the fake first (the "direct" column: the fake's own
figures), then through the gateway; one markdown table sums them up.

    .venv/bin/python scripts/bench.py [--quick] [--json FILE] [--workers 2] [--quiet-logs]
        [--scenarios latency,throughput,stream,idle[,idle10k]] [--gateway-env KEY=VAL ...]
        [--ref COMMIT] [--wait-quiet SECONDS] [--profile FILE.svg|.txt|.json]

(scripts/bench.py, the documented entry point, runs this file with the same arguments.)

Scenarios (the default is the first four; idle10k runs only when named):
  latency     a. 1 connection, sequential non-streaming POSTs after a warm-up: p50/p99, CPU/request.
  throughput  b. `wrk -t2 -c64 --latency -s bench/bench_post.lua`: req/s, p99, and CPU ms per
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
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bodies
from bodies import Target, chat_targets
from clients import idle_streams, run_async, run_client, run_wrk, sequential, streams
from report import Row, table
from servers import (
    CLK_TCK,
    HOST,
    ROOT,
    Server,
    cpu_seconds,
    export_gateway,
    log_errors,
    machine,
    machine_busy_pct,
    machine_ticks,
    own_cpu_seconds,
    start_fake,
    start_gateway,
)

SCENARIOS = ("latency", "throughput", "stream", "idle", "idle10k")


# --- results -----------------------------------------------------------------------------------
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
            pids += [pid for extra in getattr(self.args, "extra_fakes", ()) for pid in extra.pids()]
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (well under a minute in all)")
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--gateway-env", metavar="KEY=VAL", action="append", default=[], help="repeatable")
    parser.add_argument("--workers", type=int, default=2, help="gateway WORKERS (default 2)")
    parser.add_argument("--scenarios", default="latency,throughput,stream,idle", help=f"among {','.join(SCENARIOS)}")
    parser.add_argument("--replicas", type=int, default=1,
                        help="the route's replicas: the measured fake and more of its kind (routing policies' cost)")  # fmt: skip
    parser.add_argument("--prompt-bytes", type=int, default=0,
                        help="a system prompt of this many bytes before the chat's prompt (ROUTING_POLICY=prefix's cost)")  # fmt: skip
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
    bodies.system_bytes = args.prompt_bytes
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
        args.extra_fakes = [start_fake() for _ in range(args.replicas - 1)]
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
        for extra in getattr(args, "extra_fakes", ()):
            extra.stop()
            os.unlink(extra.log.name)
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
