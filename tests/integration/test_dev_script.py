"""scripts/dev.sh --fake: the fake vLLM server and the gateway, started and stopped together.

The script runs from a copy of the repository in a temporary directory (so the .env it creates
lands there), with this test run's virtual environment (GATEWAY_VENV), on free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, Process, free_port

COPIED = ("gateway", "scripts", "requirements.lock", "requirements-dev.lock", ".env.example")


def session_members(session: int) -> dict[int, str]:
    """The processes of a session (the script's: it starts one), with their command lines."""
    members: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == session:
            members[int(entry.name)] = cmdline
    return members


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


class DevScript(Process):
    def __init__(self, root: Path) -> None:
        self.api_port, self.fake_port = free_port(), free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "GATEWAY_VENV": sys.prefix,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "FAKE_VLLM_PORT": str(self.fake_port),
            "MODEL_ROUTE_tiny": f"http://127.0.0.1:{self.fake_port}/v1",
            "WORKERS": "2",
        }
        super().__init__("dev-sh", ["bash", str(root / "scripts" / "dev.sh"), "--fake"], env, cwd=root)

    def processes(self) -> dict[int, str]:
        return session_members(self.pid)


@pytest.fixture
def dev_script(tmp_path: Path) -> Iterator[DevScript]:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    script = DevScript(tmp_path)
    try:
        script.wait_http(f"http://127.0.0.1:{script.api_port}/health", ok=lambda r: r.json().get("vllm") == "ok")
        yield script
    finally:
        script.stop(timeout=5)
        for pid in script.processes():  # never leave a gateway behind, whatever the test saw
            os.kill(pid, signal.SIGKILL)


def test_the_fake_serves_chat_through_the_gateway(dev_script: DevScript, tmp_path: Path) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{dev_script.api_port}/api/chat",
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert "tok0" in response.text
    assert (tmp_path / ".env").is_file()  # created from .env.example, as the script says
    assert "FAKE vLLM" in dev_script.output()


def test_stopping_the_script_by_its_pid_stops_the_gateway_and_the_fake(dev_script: DevScript) -> None:
    started = dev_script.processes()
    assert any("-m gateway" in cmd for cmd in started.values()), started
    assert any("fake_vllm.py" in cmd for cmd in started.values()), started

    os.kill(dev_script.pid, signal.SIGTERM)  # as a Procfile manager or `kill PID` does
    assert dev_script.wait(timeout=20) == 0, dev_script.output()[-3000:]
    assert wait_until(lambda: not dev_script.processes(), timeout=10), dev_script.processes()
    assert port_free(dev_script.api_port) and port_free(dev_script.fake_port)


def test_the_gateway_is_stopped_when_the_fake_dies(dev_script: DevScript) -> None:
    (fake,) = [pid for pid, cmd in dev_script.processes().items() if "fake_vllm.py" in cmd]
    os.kill(fake, signal.SIGKILL)
    assert dev_script.wait(timeout=20) != 0  # the script says it failed ...
    assert wait_until(lambda: not dev_script.processes(), timeout=10), dev_script.processes()
    assert port_free(dev_script.api_port)  # ... and leaves no gateway behind
