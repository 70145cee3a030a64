"""
The CPU instructions one gateway worker spends per stream, counted (not timed) by valgrind's
callgrind: the same count for the same code whatever else the machine is doing, so versions of
the code compare to a fraction of a percent on a VM whose timings swing by a third.

    .venv/bin/python bench/count_instructions.py [--ref COMMIT ...] [--streams 200] [--chunks 1]
        [--path /v1/chat/completions|/api/chat/stream] [--gateway-env KEY=VAL ...]

For the working tree and each `--ref` (that commit's gateway/), in turn: the fake vLLM server
(natively), then `python -m gateway` with WORKERS=1 under `valgrind --tool=callgrind` (about 50
times slower), 60 streams to warm it up, the worker's counters zeroed, then `--streams` streams
in bursts of 10, and the worker's count dumped. Printed: user-space instructions per stream
(the kernel's work, the system calls, is not counted). Needs valgrind (`apt-get install
valgrind`); takes about 3 minutes per version. Loopback only; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clients
import servers
from bodies import chat_targets

BURST = 10
WARM_UP = 60
# Sanic's worker manager gives a worker 30 s to report ready, too little under valgrind.
LAUNCHER = (
    "import runpy, sanic.worker.manager as m, sanic.worker.process as p; "
    "p.WorkerProcess.THRESHOLD = m.WorkerManager.THRESHOLD = 10**6; "
    "runpy.run_module('gateway', run_name='__main__')"
)


async def streams(port: int, raw: bytes, count: int) -> None:
    for _ in range(count // BURST):
        results = await asyncio.wait_for(asyncio.gather(*(clients.one_stream(port, raw) for _ in range(BURST))), 120)
        if not all(result.done for result in results):
            raise RuntimeError("a stream did not end with [DONE]")


def count(code: str, fake: servers.Server, args: argparse.Namespace) -> int:
    """User-space instructions of the gateway's worker over `args.streams` streams."""
    target = next(t for t in chat_targets(stream=True, chunks=args.chunks) if t.path == args.path)
    port, folder = servers.free_port(), tempfile.mkdtemp(prefix="count-instructions-")
    env = {**servers.gateway_env(code, port, fake, workers=1), "PIN_WORKERS": "0"}
    env.update(item.split("=", 1) for item in args.gateway_env)
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={folder}/cg.%p",
            sys.executable, "-c", LAUNCHER]  # fmt: skip
    gateway = servers.Server("gateway-callgrind", argv, env, folder)
    gateway.port = port
    try:
        gateway.wait_ready("/health", timeout=600)
        worker = str(servers.get_json(port, "/api/routes")["worker"])
        raw = clients.raw_request("POST", target.path, port, target.body)
        asyncio.run(streams(port, raw, WARM_UP))
        subprocess.run(["callgrind_control", "--zero", worker], check=True, capture_output=True, timeout=60)
        asyncio.run(streams(port, raw, args.streams))
        subprocess.run(["callgrind_control", "--dump", worker], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while not (dumps := glob.glob(f"{folder}/cg.{worker}.*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        text = Path(max(dumps, key=os.path.getmtime)).read_text()
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no total in the callgrind dump of {code}")
        return int(found.group(1))
    finally:
        gateway.stop(60)
        os.unlink(gateway.log.name)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", action="append", default=[], help="also the gateway as of this commit (repeatable)")
    parser.add_argument("--streams", type=int, default=200, help="streams counted (default 200)")
    parser.add_argument("--chunks", type=int, default=1, help="content events per stream (default 1)")
    parser.add_argument("--path", default="/v1/chat/completions", choices=["/v1/chat/completions", "/api/chat/stream"])
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="KEY=VAL", help="a setting for every gateway measured"
    )
    args = parser.parse_args()
    if args.streams < BURST:
        parser.error(f"--streams must be {BURST} or more")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    versions = [("working tree", str(servers.ROOT))]
    folders = []
    for ref in args.ref:
        folder, commit = servers.export_gateway(ref)
        folders.append(folder)
        versions.append((commit[:10], folder))
    fake = servers.start_fake()
    try:
        rows = [(label, count(code, fake, args)) for label, code in versions]
    finally:
        fake.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{args.streams} streams, {args.chunks} content event(s) each, {args.path}, one worker\n")
    print("| gateway | instructions per stream (user space) |\n|---|--:|")
    for label, total in rows:
        print(f"| {label} | {total / args.streams:,.0f} |")


if __name__ == "__main__":
    main()
