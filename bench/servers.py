"""
The processes a benchmark runs, and what /proc says about them and the machine: the fake vLLM
server and the gateway as children in sessions of their own (stopped with SIGTERM, then
SIGKILL for their process group), their CPU time and memory, the machine's load, and the
gateway as of another commit (`git archive` to a temp folder). Used by bench.py,
burst_pairs.py and count_instructions.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "bench-model"  # the one model the fake serves
CLK_TCK = os.sysconf("SC_CLK_TCK")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


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
    # No prefix cache: hashing each prompt would make the fake, not the gateway, what is measured.
    argv = [sys.executable, str(ROOT / "scripts" / "fake_vllm.py"), "--port", str(port), "--quiet", "--model", MODEL,
            "--prefix-cache-blocks", "0"]  # fmt: skip
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
    for extra in getattr(args, "extra_fakes", ()):  # more replicas of the route (bench.py --replicas)
        env["MODEL_ROUTE_bench"] += f",http://{HOST}:{extra.port}/v1"
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


def get_json(port: int, path: str) -> dict[str, Any]:
    with _opener.open(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


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
