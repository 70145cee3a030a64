"""A worker that dies is replaced: real `python -m gateway` processes, workers killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.procs import FakeVLLM, Gateway

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
WAIT_SECONDS = 10.0


def server_workers(gateway: Gateway) -> dict[str, int]:
    """The gateway's server processes now: Sanic's worker name -> pid."""
    workers = {}
    for task in Path(f"/proc/{gateway.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
                continue
            for entry in environ:
                if entry.startswith(b"SANIC_WORKER_NAME=Sanic-Server-"):
                    workers[entry.split(b"=", 1)[1].decode()] = int(child)
    return workers


def wait_for_replacement(gateway: Gateway, name: str, dead_pid: int, served_after: int) -> int:
    """The pid of `name`'s replacement once it serves (its "Worker ready" line)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        pid = server_workers(gateway).get(name)
        if pid not in (None, dead_pid) and gateway.output().count("Worker ready") > served_after:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} was not replaced within {WAIT_SECONDS} s:\n{gateway.output()[-3000:]}")


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell one from the other")
def test_a_killed_worker_is_replaced_on_its_cpu_logged_and_counted(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-test-")
    gateway = start_gateway(
        workers=2, MODEL_ROUTE_chat=chat_upstream.url, PIN_WORKERS="on", PROMETHEUS_MULTIPROC_DIR=metrics_dir
    )
    workers = server_workers(gateway)
    assert len(workers) == 2
    name, victim = max(workers.items())
    cpu = cpus_allowed(victim)
    assert list(Path(metrics_dir).glob(f"gauge_livesum_{victim}.db"))  # its open-streams gauge

    ready = gateway.output().count("Worker ready")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for_replacement(gateway, name, victim, ready)
    replaced_in = time.monotonic() - killed_at

    assert replaced_in < WAIT_SECONDS
    assert cpus_allowed(replacement) == cpu  # same worker name, same CPU
    assert f"worker {name} (pid {victim}) died (killed by SIGKILL); a replacement starts now" in gateway.output()
    assert not list(Path(metrics_dir).glob(f"gauge_livesum_{victim}.db"))  # marked dead: live gauges drop it
    # Both workers serve again, and the restart is counted whichever worker is scraped.
    for _ in range(20):
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    for _ in range(4):
        scrape = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert "gateway_worker_restarts_total 1.0" in scrape
    assert gateway.stop(timeout=15) == 0


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly_and_the_gateway_still_stops(
    start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM
) -> None:
    gateway = start_gateway(workers=2, MODEL_ROUTE_chat=chat_upstream.url)
    name, pid = max(server_workers(gateway).items())
    for _ in range(3):
        ready = gateway.output().count("Worker ready")
        os.kill(pid, signal.SIGKILL)
        pid = wait_for_replacement(gateway, name, pid, ready)
    # The first death is replaced at once; each quick one after waits longer: 0.5 s, then 1 s.
    output = gateway.output()
    assert "a replacement starts now" in output
    assert "a replacement starts in 0.5 s (it died again soon after it started)" in output
    assert "a replacement starts in 1 s (it died again soon after it started)" in output
    # Killed again, it waits 2 s; a SIGTERM during that wait stops the gateway without restarting it.
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_SECONDS
    while "a replacement starts in 2 s" not in gateway.output():
        assert time.monotonic() < deadline, gateway.output()[-3000:]
        time.sleep(0.05)
    stopping = time.monotonic()
    assert gateway.stop(timeout=15) == 0
    assert time.monotonic() - stopping < 10
    assert gateway.output().count("started in place of") == 3
