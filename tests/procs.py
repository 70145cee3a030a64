"""
Real processes for integration tests: `python -m gateway` and the fake vLLM server.

Every wait is bounded; every process is stopped (and its output kept for the failure report)
when the test is done. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
FAKE_VLLM = ROOT / "scripts" / "fake_vllm.py"
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process whose combined output goes to a temporary file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.name = name
        # Open as long as the process runs: its output goes there.
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.popen = subprocess.Popen(
            args,
            env=dict(env),
            cwd=str(cwd or ROOT),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost machine: no chance to close anything."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=5)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL (the whole process group) if it has not exited in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        else:
            try:  # workers may outlive a crashed manager
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return int(self.popen.returncode)

    def wait_http(
        self, url: str, ok: Any = lambda r: r.status_code < 500, timeout: float = START_TIMEOUT_SECONDS
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            try:
                if ok(httpx.get(url, timeout=1.0)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout} s:\n{self.output()[-3000:]}")


class FakeVLLM(Process):
    """`scripts/fake_vllm.py` on a free port; `configure()` and `stats()` use its control API."""

    def __init__(self, *models: str, args: tuple[str, ...] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.origin}/v1"
        argv = [sys.executable, str(FAKE_VLLM), "--port", str(self.port), "--quiet"]
        for model in models or ("tiny-llama",):
            argv += ["--model", model]
        super().__init__(f"fake-vllm-{self.port}", argv + list(args), os.environ)
        self.wait_http(f"{self.url}/models", ok=lambda r: r.status_code == 200)

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.origin}/_fake/config", json=config, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.origin}/_fake/reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.origin}/_fake/stats", timeout=5).json()


class Gateway(Process):
    """`python -m gateway` with the given settings, on a free port, once `/health` answers.

    With `all_ready`, also once every worker has said it is ready (one answers `/health` first).
    """

    def __init__(self, env: Mapping[str, str], workers: int = 2, name: str = "gateway", all_ready: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MODEL_ROUTE_", "PROMETHEUS_MULTIPROC"))
        }
        # Rate limiting is off unless a test turns it on: most tests send more than 60 requests.
        full_env.update(
            {"API_HOST": "127.0.0.1", "API_PORT": str(self.port), "WORKERS": str(workers), "RATE_LIMIT_PER_MIN": "0"}
        )
        full_env.update(env)
        # The tests' settings must not be mixed with a developer's .env: run from an empty folder.
        self.workdir = Path(tempfile.mkdtemp(prefix="gateway-cwd-"))
        full_env["PYTHONPATH"] = str(ROOT)
        super().__init__(name, [sys.executable, "-m", "gateway"], full_env, cwd=self.workdir)
        self.wait_http(f"{self.url}/health")
        if all_ready:
            self.wait_workers(workers)

    def access_lines(self) -> dict[str, dict[str, Any]]:
        """The access log lines written so far, by request id."""
        lines = (orjson.loads(line) for line in self.output().splitlines() if line.startswith("{"))
        return {line["request_id"]: line for line in lines if line.get("message") == "request"}

    def wait_workers(self, workers: int) -> None:
        """Sanic answers as soon as one worker is ready; wait for all of them to say so."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.output().count("Worker ready") < workers:
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise RuntimeError(f"{self.name}: not all {workers} workers started:\n{self.output()[-3000:]}")
            time.sleep(0.05)


class RedisServer(Process):
    """A private `redis-server` on a free port, for tests that stop and restart Redis."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        super().__init__(f"redis-{self.port}", args, os.environ)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"redis-server exited:\n{self.output()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")


def replicas_seen(fakes: list[FakeVLLM]) -> dict[str, set[str]]:
    """Conversation -> the replicas that received its requests, from the X-Request-ID each saw
    (`<conversation>.t<turn>`)."""
    seen: dict[str, set[str]] = {}
    for fake in fakes:
        for request_id in fake.stats()["request_ids"]:
            seen.setdefault(request_id.split(".t")[0], set()).add(fake.url)
    return seen


def run_elsewhere(code: str, *args: str) -> str:
    """What `python -c code args...` prints in another interpreter, with another hash seed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=ROOT,
    )
    return done.stdout.strip()
