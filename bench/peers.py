"""
This gateway beside its peers, vLLM's router and LiteLLM's proxy, each in front of the same fake
vLLM server (scripts/fake_vllm.py), measured with bench/bench.py's own clients and noise accounting.

    .venv/bin/python bench/peers.py [--quick] [--peers gateway,vllm-router,litellm] [--rounds 2]
        [--scenarios latency,throughput,stream,idle] [--wait-quiet SECONDS] [--json FILE] [--venvs DIR]

The peers run in turn, `--rounds` times over (gateway, vllm-router, litellm, gateway, ...), each run
with a fresh fake; every scenario is measured straight against the fake first (the "direct" column),
then through the peer, on /v1/chat/completions only (the peers have no /api). Printed: each run as
it goes, then one markdown table whose cells give every run's figure.

The peers, all on 127.0.0.1 with free ports, their other settings left at their defaults:
  gateway      `python -m gateway` as bench.py starts it: WORKERS=2, INFO access log, one route.
  vllm-router  `vllm-router --host 127.0.0.1 --port P --worker-urls http://127.0.0.1:FAKE
               --policy round_robin --prometheus-port Q` (one replica; its default policy is
               cache_aware; a Rust/tokio process, its threads one per core).
  litellm      `litellm --config config.yaml --host 127.0.0.1 --port P --num_workers 2`, with
               LITELLM_LOCAL_MODEL_COST_MAP=True (no download at start) and this config.yaml: one
               model `bench-model` = `openai/bench-model` at http://127.0.0.1:FAKE/v1 (api_key
               "fake"), `litellm_settings: {telemetry: false}`, no database, and no master key
               (`general_settings: {dangerously_permit_weak_or_unset_master_key: true}`), so that
               every peer gets the same requests, without an Authorization header.
  relay-CLIENT bench/sanic_relay.py --workers 2 --client CLIENT, CLIENT among fast, httpx, aiohttp and
               httpx-aiohttp: Sanic's request path with nothing of the gateway's on top, to compare
               upstream clients with nothing else changed (not run unless named in --peers).

Each peer is installed apart from the project (bench/peer_servers.py says how) and started in front
of a fresh fake.

Scenarios as in bench.py: latency (1 connection: p50/p99 and the proxy's CPU per request),
throughput (wrk -t2 -c64, or bench.py's asyncio client without wrk: requests/s, p99, CPU ms per
request of the proxy's processes), stream (bursts of 50 streams of 64 chunks 10 ms apart: first
chunk p50/p99), idle (1,000 streams whose upstream sends its headers, then stays silent). The fake's
stream knobs are set through its /_fake/config for the stream and idle scenarios (the same for
every peer, whatever it forwards of a request's body), then restored. Every process is stopped at
the end (SIGTERM, then SIGKILL to its process group, bounded waits). A full run of the three peers,
two rounds, takes about 10 minutes; --quick about 5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import bench
import bodies
import servers
from peer_servers import PACKAGES, RELAYS, STARTERS, VENVS, ensure_aiohttp_lib, ensure_venv, version

ROOT = bench.ROOT
HOST = bench.HOST
PATH = "/v1/chat/completions"
PEERS = ("gateway", "vllm-router", "litellm")
SCENARIOS = ("latency", "throughput", "stream", "idle")


def fake_config(fake: bench.Server, knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fake's global knobs: merged with `knobs` when given; the config before returned."""
    before = servers.get_json(fake.port, "/_fake/config")
    if knobs is not None:
        request = urllib.request.Request(f"http://{HOST}:{fake.port}/_fake/config", bodies.dump(knobs),
                                         {"Content-Type": "application/json"})  # fmt: skip
        with servers._opener.open(request, timeout=5) as response:
            response.read()
    return before  # type: ignore[no-any-return]


# --- one run: the fake, one peer, every scenario -----------------------------------------------------
def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario direct, then through peer `name`: {scenario: {"direct": {...}, "peer": {...}}}."""
    folder = tempfile.mkdtemp(prefix=f"peers-{name}-")
    fake = peer = None
    results: dict[str, Any] = {}
    kept_logs = False
    try:
        fake = bench.start_fake()
        peer = STARTERS[name](fake, args, folder)
        print(f"{name}: :{peer.port} (pids {peer.pids()}, log {peer.log.name}), fake :{fake.port}", flush=True)
        runner = bench.Bench(args, fake, peer)
        for scenario in args.scenarios:
            started = time.monotonic()
            try:
                results[scenario] = SCENARIO_RUNS[scenario](runner, fake, peer, args)
            except Exception as exc:  # noqa: BLE001  a peer that fails a scenario is reported, not fatal
                results[scenario] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
                kept_logs = True
            if peer.popen.poll() is not None:
                results[scenario]["peer_exited"] = peer.popen.returncode
                kept_logs = True
            print(f"  {scenario} ({time.monotonic() - started:.1f} s): {compact(results[scenario])}", flush=True)
            if "failed" in results[scenario] or "peer_exited" in results[scenario]:
                break
    finally:
        for server in (peer, fake):
            if server is not None:
                server.stop()
                if kept_logs:
                    print(f"  kept {server.name}'s log: {server.log.name}")
                else:
                    results.setdefault("log_errors", {})[server.name] = bench.log_errors(server.log.name)
                    os.unlink(server.log.name)
        shutil.rmtree(folder, ignore_errors=True)
    return results


def compact(result: dict[str, Any]) -> str:
    def short(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            # {"direct": {...}, "peer": {...}}: the figures are one level down; their lists are samples.
            return {k: short(v, depth + 1) for k, v in value.items()
                    if not isinstance(v, list) and (depth == 0 or not isinstance(v, dict) or k == "error_kinds")}  # fmt: skip
        return round(value, 3) if isinstance(value, float) else value

    return json.dumps(short(result))


def latency(runner: bench.Bench, fake: bench.Server, peer: bench.Server, args: argparse.Namespace) -> dict[str, Any]:
    count, warmup = (500, 100) if args.quick else (2000, 200)
    body = bodies.chat_targets(stream=False)[0].body

    def measure(server: bench.Server, path: str, body: bytes) -> dict[str, Any]:
        pids = server.pids()
        cpu = bench.cpu_seconds(pids)
        result: dict[str, Any] = bench.run_async(bench.sequential(server.port, path, body, count, warmup))
        result["cpu_ms"] = (bench.cpu_seconds(pids) - cpu) * 1000 / (count + warmup)
        return result

    return both(runner, fake, peer, measure, body)


def throughput(runner: bench.Bench, fake: bench.Server, peer: bench.Server, args: argparse.Namespace) -> dict[str, Any]:
    return both(runner, fake, peer, runner.load, bodies.chat_targets(stream=False)[0].body)


def stream(runner: bench.Bench, fake: bench.Server, peer: bench.Server, args: argparse.Namespace) -> dict[str, Any]:
    rounds = 2 if args.quick else 6

    def measure(server: bench.Server, path: str, body: bytes) -> dict[str, Any]:
        return bench.run_async(bench.streams(server.port, path, body, 50, rounds))  # type: ignore[no-any-return]

    before = fake_config(fake, {"chunks": 64, "chunk_interval": 0.01})
    try:
        return both(runner, fake, peer, measure, bodies.chat_targets(stream=True)[0].body)
    finally:
        fake_config(fake, {key: before[key] for key in ("chunks", "chunk_interval")})


def idle(runner: bench.Bench, fake: bench.Server, peer: bench.Server, args: argparse.Namespace) -> dict[str, Any]:
    def measure(server: bench.Server, path: str, body: bytes) -> dict[str, Any]:
        return bench.run_async(bench.idle_streams(server, fake.port, path, body, 1000, 1000))  # type: ignore[no-any-return]

    before = fake_config(fake, {"stall_after": 0, "stall_seconds": 600})
    try:
        return both(runner, fake, peer, measure, bodies.chat_targets(stream=True)[0].body, again=False)
    finally:
        fake_config(fake, {key: before[key] for key in ("stall_after", "stall_seconds")})


def both(runner: bench.Bench, fake: bench.Server, peer: bench.Server, measure: bench.Measure, body: bytes,
         again: bool = True) -> dict[str, Any]:  # fmt: skip
    return {
        "direct": runner.noted(measure, fake, PATH, body, again),
        "peer": runner.noted(measure, peer, PATH, body, again),
    }


SCENARIO_RUNS = {"latency": latency, "throughput": throughput, "stream": stream, "idle": idle}


# --- the table -----------------------------------------------------------------------------------
# (scenario, metric, key, how a peer's figure is shown: "value" or "added" over that run's direct, digits)
METRICS = [
    ("latency", "1 connection: p50 (ms)", "p50_ms", "added", 3),
    ("latency", "1 connection: p99 (ms)", "p99_ms", "added", 3),
    ("latency", "1 connection: CPU ms/request (the fake's / the proxy's processes)", "cpu_ms", "value", 3),
    ("latency", "1 connection: errors", "errors", "value", 0),
    ("throughput", "64 connections: requests/s", "rps", "value", 0),
    ("throughput", "64 connections: p99 (ms)", "p99_ms", "value", 2),
    ("throughput", "64 connections: CPU ms/request of the proxy's processes", "gateway_cpu_ms", "value", 3),
    ("throughput", "64 connections: CPU ms/request of the fake", "fake_cpu_ms", "value", 3),
    ("throughput", "64 connections: non-2xx + socket errors", "errors", "value", 0),
    ("stream", "50 streams × 64 chunks at 10 ms: first chunk p50 (ms)", "ttfc_p50_ms", "added", 2),
    ("stream", "50 streams: first chunk p99 (ms)", "ttfc_p99_ms", "added", 2),
    ("stream", "50 streams: chunks/s over all streams", "rate_total", "value", 0),
    ("stream", "50 streams: failed streams", "errors", "value", 0),
    ("idle", "1,000 idle streams: clients with headers within 1 s", "within_1s", "value", 0),
    ("idle", "1,000 idle streams: time to headers p50 (ms)", "headers_p50_ms", "value", 1),
    ("idle", "1,000 idle streams: errors", "errors", "value", 0),
    ("idle", "1,000 idle streams: memory (PSS) KiB per stream", "pss_kib_per_stream", "value", 1),
    ("idle", "1,000 idle streams: upstream connections left 3 s after the clients left", "upstream_left", "value", 0),
]


def cell(values: list[float | None], digits: int, sign: bool = False) -> str:
    shown = ["—" if v is None else (f"{v:+,.{digits}f}" if sign else f"{v:,.{digits}f}") for v in values]
    return ", ".join(shown) or "—"


def value_range(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return (
        f"{low:,.{digits}f}"
        if f"{low:,.{digits}f}" == f"{high:,.{digits}f}"
        else f"{low:,.{digits}f}–{high:,.{digits}f}"
    )


def table(runs: list[tuple[str, dict[str, Any]]], peers: list[str]) -> str:
    lines = ["| scenario, metric | direct to the fake (range) | " + " | ".join(peers) + " |",
             "|---|--:|" + "--:|" * len(peers)]  # fmt: skip
    scenarios = [s for s in SCENARIOS if any(s in result for _, result in runs)]
    metrics = [m for m in METRICS if m[0] in scenarios]
    metrics += [(s, f"{s}: other processes' CPU during the peer's run (% of machine)", "others_cpu_pct", "value", 0)
                for s in scenarios]  # fmt: skip
    for scenario, metric, key, show, digits in metrics:
        direct = [r[scenario]["direct"][key] for _, r in runs
                  if "direct" in r.get(scenario, {}) and r[scenario]["direct"].get(key) is not None]  # fmt: skip
        cells = []
        for peer in peers:
            shown: list[str] = []
            for name, result in runs:
                if name != peer:
                    continue
                got = result.get(scenario)
                if got is None:
                    shown.append("not run")
                elif "peer" not in got:
                    shown.append("failed")
                else:
                    value, base = got["peer"].get(key), got["direct"].get(key)
                    if show == "added" and value is not None and base is not None:
                        shown.append(cell([value - base], digits, sign=True))
                    else:
                        shown.append(cell([value], digits))
            cells.append(", ".join(shown) or "—")
        direct_cell = "—" if key in ("gateway_cpu_ms", "upstream_left") else value_range(direct, digits)
        lines.append(f"| {metric} | {direct_cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (as bench.py --quick)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"among {','.join(PEERS + RELAYS)}, in this order")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each peer, interleaved (default 2)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"among {','.join(SCENARIOS)}")
    parser.add_argument("--wait-quiet", metavar="SECONDS", type=float, default=0.0,
                        help="as bench.py's, for each peer's run: wait for an idle machine before each measurement, "
                        "and measure again when others took the CPU, while the run is younger than SECONDS")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also save every run's figures as JSON")
    parser.add_argument("--venvs", type=Path, default=VENVS, help=f"the peers' venvs (default {VENVS})")
    args = parser.parse_args()
    args.peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if bad := (set(args.peers) - set(PEERS + RELAYS)) | (set(args.scenarios) - set(SCENARIOS)):
        parser.error(f"unknown peers or scenarios: {sorted(bad)}")
    args.wrk = shutil.which("wrk") is not None
    args.load = "wrk" if args.wrk else "asyncio client (no wrk on PATH: apt-get install wrk)"
    args.profile = None  # bench.Bench.load's py-spy option, unused here
    return args


def main() -> None:
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # idle streams: thousands of sockets here
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.commands = {name: ensure_venv(name, args.venvs) for name in args.peers if name in PACKAGES}
    if {"relay-aiohttp", "relay-httpx-aiohttp"} & set(args.peers):
        ensure_aiohttp_lib(args.venvs)
    versions = {name: version(name, args.venvs) for name in args.peers}
    info = bench.machine(None)
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, load {' '.join(info['loadavg'])}")
    print(f"python {platform.python_version()} for the fake and the gateway; load: {args.load}")
    print("versions: " + ", ".join(f"{name} {v}" for name, v in versions.items()), flush=True)
    if info["vllm_pids"]:
        print(f"WARNING: vLLM servers are running (pids {', '.join(info['vllm_pids'])}): figures are disturbed")
    per_run = 240 if args.quick else 420
    signal.signal(signal.SIGALRM, bench._deadline)
    signal.alarm(int(args.rounds * len(args.peers) * (per_run + args.wait_quiet)))
    runs: list[tuple[str, dict[str, Any]]] = []
    try:
        for index in range(args.rounds):
            for name in args.peers:
                print(f"\nround {index + 1}, {name} ({time.strftime('%H:%M:%S')})", flush=True)
                runs.append((name, run_one(name, args)))
    finally:
        signal.alarm(0)
        if args.json:
            report = {"machine": info, "versions": versions, "runs": [{"peer": n, **r} for n, r in runs]}
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(f"\nsaved {args.json}")
    errors = {f"{name} run {i + 1}": r["log_errors"] for i, (name, r) in enumerate(runs) if any(r.get("log_errors", {}).values())}  # fmt: skip
    if errors:
        print(f"\nWARNING: error lines in the server logs: {errors}")
    print(f"\n{info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {platform.python_version()}; "
          + ", ".join(f"{name} {v}" for name, v in versions.items())
          + f"; {args.rounds} rounds, load: {args.load}{', quick' if args.quick else ''}; /v1/chat/completions\n")  # fmt: skip
    print(table(runs, args.peers))


if __name__ == "__main__":
    main()
