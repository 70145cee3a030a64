"""
Fixtures of the end-to-end suite: the real vLLM servers (CPU build) and one gateway in front of them.

Run with `pytest -m e2e tests/e2e` (the `e2e` marker is deselected by default). The servers are
the ones `scripts/start_vllm.sh --cpu` starts: chat `tiny-llama` on 127.0.0.1:8101 and embeddings
`all-MiniLM-L6-v2` on 127.0.0.1:8102. Servers that already answer are used as they are and left
running; servers this session had to start are stopped at its end. If they cannot be started the
tests fail (never skip): an end-to-end run that silently tested nothing would look green in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Generator, Iterator
from typing import Any

import httpx
import pytest

from tests.procs import ROOT, Gateway

CHAT_PORT = 8101
EMBED_PORT = 8102
CHAT_ORIGIN = f"http://127.0.0.1:{CHAT_PORT}"
EMBED_ORIGIN = f"http://127.0.0.1:{EMBED_PORT}"
CHAT_URL = f"{CHAT_ORIGIN}/v1"
EMBED_URL = f"{EMBED_ORIGIN}/v1"
CHAT_MODEL = "tiny-llama"
EMBED_MODEL = "all-MiniLM-L6-v2"

# start_vllm.sh target -> (port, served model name)
SERVERS = {"chat": (CHAT_PORT, CHAT_MODEL), "embed": (EMBED_PORT, EMBED_MODEL)}

# A cold set-up (venv install, ~2 min) plus both servers starting (~40 s) fits well within this.
START_TIMEOUT_SECONDS = 600
STOP_TIMEOUT_SECONDS = 90

START_SCRIPT = ROOT / "scripts" / "start_vllm.sh"
STOP_SCRIPT = ROOT / "scripts" / "stop_vllm.sh"


def serving(port: int, model: str) -> bool:
    """True when 127.0.0.1:`port` answers `/v1/models` with `model` in its list."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=3.0)
        return response.status_code == 200 and any(item.get("id") == model for item in response.json()["data"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False


def _run_script(args: list[str], timeout: float) -> tuple[int | None, str]:
    """Run a script (bounded); returns its exit code (None on timeout) and combined output.

    It runs in a process group of its own, so a timeout also ends what it is running (pip, say);
    the vLLM servers themselves are started in sessions of their own and are not touched by it.
    """
    # The ports are fixed here (the gateway's routes name them), whatever the caller's environment says.
    env = {**os.environ, "VLLM_CPU_CHAT_PORT": str(CHAT_PORT), "VLLM_CPU_EMBED_PORT": str(EMBED_PORT)}
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            output = b""
        return None, output.decode(errors="replace")
    return proc.returncode, output.decode(errors="replace")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def vllm_servers() -> Iterator[None]:
    """Both real vLLM servers answering; started here (and stopped afterwards) if they were not."""
    missing = [target for target, (port, model) in SERVERS.items() if not serving(port, model)]
    if missing:
        started_at = time.monotonic()
        code, output = _run_script(["bash", str(START_SCRIPT), "--cpu", *missing], START_TIMEOUT_SECONDS)
        still_missing = [target for target in missing if not serving(*SERVERS[target])]
        if code != 0 or still_missing:
            # Do not leave half-started servers of ours behind.
            _run_script(["bash", str(STOP_SCRIPT), *missing], STOP_TIMEOUT_SECONDS)
            why = f"timed out after {START_TIMEOUT_SECONDS} s" if code is None else f"exit code {code}"
            pytest.fail(
                f"could not start the real vLLM servers ({' '.join(missing)}) with "
                f"scripts/start_vllm.sh --cpu: {why}; not answering: {still_missing or 'none'}\n"
                f"--- last lines of its output ---\n{_tail(output)}",
                pytrace=False,
            )
        print(f"\ne2e: started vLLM ({' '.join(missing)}) in {time.monotonic() - started_at:.1f} s")
    try:
        yield
    finally:
        if missing:  # only what this session started; servers found running are left alone
            code, output = _run_script(["bash", str(STOP_SCRIPT), *missing], STOP_TIMEOUT_SECONDS)
            if code != 0:
                print(f"\ne2e: scripts/stop_vllm.sh exited with {code}:\n{_tail(output)}")


GATEWAY_ENV = {
    "WORKERS": "2",
    "MODEL_ROUTE_tiny": CHAT_URL,
    "MODEL_ROUTE_embed": EMBED_URL,
    "DEFAULT_MODEL_KEY": "tiny",
    # Limits off: the suite makes more than the default 60 requests a minute from one IP.
    "RATE_LIMIT_PER_MIN": "0",
    "AUTH_REQUIRED": "false",
    # Keep settings of the surrounding environment out of the gateway under test.
    "API_KEY": "",
    "ALLOWED_MODELS": "",
    "DEFAULT_MODEL_NAME": "",
    "VLLM_BASE_URL": "",
    "USE_REDIS": "false",
}


@pytest.fixture(scope="module")
def gateway(vllm_servers: None) -> Iterator[Gateway]:
    """One `python -m gateway` (2 workers) per test module, in front of both real servers."""
    try:
        gw = Gateway(GATEWAY_ENV, workers=2, name="gateway-e2e")
    except RuntimeError as exc:
        pytest.fail(f"the gateway did not start: {exc}", pytrace=False)
    yield gw
    gw.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test's report ends with the last lines of the gateway's log."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        gw = getattr(item, "funcargs", {}).get("gateway")
        if isinstance(gw, Gateway):
            report.sections.append(("gateway log (tail)", _tail(gw.output(), 60)))
