"""
What a gateway adds to the first chunk of a burst of new streams, finely enough to compare two
versions of the code, or the gateway with the cheapest relay there is.

    .venv/bin/python bench/burst_pairs.py [--pairs 60] [--ref COMMIT ...]
        [--variant KEY=VAL[,KEY=VAL...] ...] [--relay] [--sanic-relay] [--path /api/chat/stream]

The servers: the fake vLLM server (the "direct" line), the working tree's gateway, one gateway per
`--ref` (that commit's gateway/), one more of the working tree per `--variant` (with those extra
environment variables), with `--relay` bench/tcp_relay.py, which only copies bytes, and with
`--sanic-relay` bench/sanic_relay.py, Sanic's own request path with nothing of the gateway's
on top. Every gateway runs as bench.py runs it (WORKERS=2, access log on).

Each round sends one burst of 50 streams (64 chunks 10 ms apart, bench.py's stream scenario) to
each server in turn, in random order; a burst's figure is the median time from a request's send
to its first content event. Against the first gateway, each server's differences are averaged over
the rounds, with their standard error; beside them, the CPU time (user and system, from /proc) of
the server's processes during its own bursts, per stream (the fake's own for the direct line).
Why pairs: the median of one burst swings by a millisecond from minute to minute on a shared VM,
so six bursts (bench.py) cannot tell 0.3 ms apart; bursts taken side by side see the same minute,
and their difference keeps only what the code changed.
Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import clients
import servers
from bodies import chat_targets

BURST = 50
PAUSE_S = 0.03  # between bursts: the previous one's streams have ended, their sockets closed


@dataclass
class Entry:
    label: str
    port: int
    raw: bytes
    server: servers.Server
    pids: list[int] = field(default_factory=list)  # whose CPU time the server's bursts are charged
    medians: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0


async def burst(entry: Entry) -> None:
    cpu_before = servers.cpu_seconds(entry.pids)
    results = await asyncio.wait_for(
        asyncio.gather(*(clients.one_stream(entry.port, entry.raw) for _ in range(BURST))), 60
    )
    entry.cpu_seconds += servers.cpu_seconds(entry.pids) - cpu_before
    firsts = [r.first * 1000 for r in results if r.done and r.first is not None]
    if len(firsts) < BURST:
        raise RuntimeError(f"{entry.label}: {BURST - len(firsts)} of {BURST} streams failed")
    entry.medians.append(statistics.median(firsts))


async def rounds(entries: list[Entry], pairs: int) -> None:
    for entry in entries:  # warm-up: pools, caches
        await burst(entry)
        entry.medians.clear()
        entry.pids, entry.cpu_seconds = entry.server.pids(), 0.0  # every worker is up by now
    for _ in range(pairs):
        for entry in random.sample(entries, len(entries)):
            await burst(entry)
            await asyncio.sleep(PAUSE_S)


def report(entries: list[Entry], base: Entry) -> str:
    head = "| server | median first chunk (ms) | against the gateway: mean difference ± s.e. | median difference |"
    lines = [head + " CPU per stream (ms) |", "|---|--:|--:|--:|--:|"]
    for entry in entries:
        cells = ["—", "—"]
        if entry is not base:
            diffs = [a - b for a, b in zip(entry.medians, base.medians, strict=True)]
            error = statistics.stdev(diffs) / len(diffs) ** 0.5
            cells = [f"{statistics.mean(diffs):+.2f} ± {error:.2f} ms", f"{statistics.median(diffs):+.2f} ms"]
        cpu = entry.cpu_seconds * 1000 / (len(entry.medians) * BURST)
        lines.append(
            f"| {entry.label} | {statistics.median(entry.medians):.2f} | {cells[0]} | {cells[1]} | {cpu:.2f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=60, help="rounds (default 60: about 3 s each with 4 servers)")
    parser.add_argument("--ref", action="append", default=[], help="a gateway as of this commit (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VAL[,KEY=VAL]",
                        help="a working-tree gateway with these extra environment variables (repeatable)")  # fmt: skip
    parser.add_argument("--relay", action="store_true", help="also through bench/tcp_relay.py")
    parser.add_argument("--sanic-relay", action="store_true", help="also through bench/sanic_relay.py")
    parser.add_argument("--path", default="/v1/chat/completions", choices=["/v1/chat/completions", "/api/chat/stream"])
    args = parser.parse_args()
    if args.pairs < 2:
        parser.error("--pairs must be 2 or more")
    for variant in args.variant:
        if any("=" not in item for item in variant.split(",")):
            parser.error(f"--variant wants KEY=VAL[,KEY=VAL]: {variant!r}")
    return args


def main() -> None:
    args = parse_args()
    target = next(t for t in chat_targets(stream=True, chunks=64, chunk_interval=0.01) if t.path == args.path)
    servers: list[servers.Server] = []
    folders: list[str] = []
    succeeded = False
    try:
        fake = servers.start_fake()
        servers.append(fake)
        direct = clients.raw_request("POST", target.direct_path, fake.port, target.direct_body)
        entries = [Entry("direct (fake)", fake.port, direct, fake)]
        gateways: list[tuple[str, str, list[str]]] = [("gateway (working tree)", str(servers.ROOT), [])]
        for ref in args.ref:
            folder, commit = servers.export_gateway(ref)
            folders.append(folder)
            gateways.append((f"gateway {commit[:10]}", folder, []))
        gateways += [(f"gateway + {variant}", str(servers.ROOT), variant.split(",")) for variant in args.variant]
        for label, code, env in gateways:
            options = SimpleNamespace(code=code, workers=2, quiet_logs=False, gateway_env=env)
            gateway = servers.start_gateway(fake, options)  # type: ignore[arg-type]
            servers.append(gateway)
            folders.append(options.cwd)
            raw = clients.raw_request("POST", target.path, gateway.port, target.body)
            entries.append(Entry(label, gateway.port, raw, gateway))
        relays = [("tcp_relay.py", ["--processes", "2"])] if args.relay else []
        relays += [("sanic_relay.py", ["--workers", "2"])] if args.sanic_relay else []
        for script, options in relays:  # both take the fake's own request, on /v1
            port = servers.free_port()
            argv = [sys.executable, str(Path(__file__).resolve().with_name(script)), "--port", str(port),
                    "--upstream-port", str(fake.port), *options]  # fmt: skip
            relay = servers.Server(script, argv, {}, str(servers.ROOT))
            relay.port = port
            servers.append(relay)
            relay.wait_ready("/health")
            raw = clients.raw_request("POST", target.direct_path, port, target.direct_body)
            entries.append(Entry(script, port, raw, relay))
        started = time.monotonic()
        asyncio.run(rounds(entries, args.pairs))
        print(f"{args.pairs} rounds of one burst of {BURST} streams per server, {args.path}, "
              f"{time.monotonic() - started:.0f} s\n")  # fmt: skip
        print(report(entries, base=entries[1]))
        succeeded = True
    finally:
        for server in reversed(servers):
            server.stop()
            if succeeded:  # kept when something failed
                os.unlink(server.log.name)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
