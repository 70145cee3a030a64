"""
The peers that bench/peers.py compares, installed and started: this gateway, vLLM's router,
LiteLLM's proxy and the Sanic relays, each in front of the fake it is given.

Each peer is installed in a venv of its own under --venvs (default ~/.cache/gateway-peers), never in
the project's: on first run this script makes the missing ones with exactly

    .venv/bin/python -m venv ~/.cache/gateway-peers/vllm-router
    ~/.cache/gateway-peers/vllm-router/bin/pip install 'vllm-router==0.1.17'
    .venv/bin/python -m venv ~/.cache/gateway-peers/litellm
    ~/.cache/gateway-peers/litellm/bin/pip install 'litellm[proxy]==1.106.12'

(litellm 1.106.12: later releases' [proxy] extra pins litellm-proxy, litellm-proxy-extras or
litellm-enterprise versions that the package index used here did not have.) The relays run on the
project's venv; aiohttp and httpx-aiohttp go to a folder put on their PYTHONPATH, made with

    .venv/bin/pip install --target ~/.cache/gateway-peers/aiohttp-lib 'aiohttp==3.14.5'
    .venv/bin/pip install --no-deps --target ~/.cache/gateway-peers/aiohttp-lib 'httpx-aiohttp==0.2.0'

and then rid of the copies of multidict, idna and typing_extensions that the venv has already
(aiohttp's newest multidict is one Sanic refuses).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import bench
import bodies
import servers

HOST = bench.HOST
ROOT = bench.ROOT
PATH = "/v1/chat/completions"
RELAYS = tuple(f"relay-{client}" for client in ("fast", "httpx", "aiohttp", "httpx-aiohttp"))
AIOHTTP_LIB = "aiohttp-lib"
AIOHTTP_REQUIREMENTS = ("aiohttp==3.14.5", "httpx-aiohttp==0.2.0")
AIOHTTP_SHADOWS = ("multidict", "idna", "typing_extensions")  # the venv's own copies serve
VENVS = Path.home() / ".cache" / "gateway-peers"
# name -> (pip requirement, the command the venv provides, the distribution whose version is printed)
PACKAGES = {"vllm-router": ("vllm-router==0.1.17", "vllm-router", "vllm-router"),
            "litellm": ("litellm[proxy]==1.106.12", "litellm", "litellm")}  # fmt: skip
LITELLM_WORKERS = 2


# --- the peers' venvs --------------------------------------------------------------------------
def venv_commands(name: str, venvs: Path) -> list[list[str]]:
    requirement, _, _ = PACKAGES[name]
    return [
        [sys.executable, "-m", "venv", str(venvs / name)],
        [str(venvs / name / "bin" / "pip"), "install", requirement],
    ]


def ensure_venv(name: str, venvs: Path) -> Path:
    """The peer's command, its venv made first when it is missing."""
    command = venvs / name / "bin" / PACKAGES[name][1]
    if command.exists():
        return command
    for argv in venv_commands(name, venvs):
        print("setting up:", " ".join(argv), flush=True)
        if subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=900, check=False).returncode != 0:
            sys.exit(f"could not set up {name}; the commands are:\n" +
                     "\n".join(" ".join(a) for a in venv_commands(name, venvs)))  # fmt: skip
    return command


def ensure_aiohttp_lib(venvs: Path) -> Path:
    """The folder of aiohttp and httpx-aiohttp for the relays, made first when it is missing."""
    folder = venvs / AIOHTTP_LIB
    if (folder / "httpx_aiohttp").is_dir():
        return folder
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder)]
    for argv in (pip + [AIOHTTP_REQUIREMENTS[0]], pip + ["--no-deps", AIOHTTP_REQUIREMENTS[1]]):
        print("setting up:", " ".join(argv), flush=True)
        if subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=900, check=False).returncode != 0:
            sys.exit(f"could not install {' '.join(AIOHTTP_REQUIREMENTS)} into {folder}")
    for entry in folder.iterdir():
        if entry.name.split("-")[0].split(".")[0] in AIOHTTP_SHADOWS:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return folder


def version(name: str, venvs: Path) -> str:
    if name == "gateway":
        return bench.machine(None)["commit"][:12]
    if name in RELAYS:
        client = name.removeprefix("relay-")
        code = "import importlib.metadata as m; print(m.version('sanic'), m.version('httpx'), end=' ')"
        if client in ("aiohttp", "httpx-aiohttp"):
            code += "; print(m.version('aiohttp'), m.version('httpx-aiohttp'), end='')"
        env = {**os.environ, "PYTHONPATH": str(venvs / AIOHTTP_LIB)}
        found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        labels = ("sanic", "httpx", "aiohttp", "httpx-aiohttp")
        return " ".join(f"{label} {v}" for label, v in zip(labels, found.stdout.split(), strict=False))
    code = f"import importlib.metadata as m; print(m.version({PACKAGES[name][2]!r}))"
    python = venvs / name / "bin" / "python"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# --- starting a peer -----------------------------------------------------------------------------
def base_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if key in os.environ}


def start_gateway(fake: bench.Server, args: argparse.Namespace, folder: str) -> bench.Server:
    gateway_args = argparse.Namespace(code=str(ROOT), workers=2, quiet_logs=False, gateway_env=[])
    try:
        return bench.start_gateway(fake, gateway_args)
    finally:
        if getattr(gateway_args, "cwd", None):  # its empty cwd (no .env there), removed with the run's folder
            shutil.move(gateway_args.cwd, folder)


def start_router(fake: bench.Server, args: argparse.Namespace, folder: str) -> bench.Server:
    port = servers.free_port()
    argv = [str(args.commands["vllm-router"]), "--host", HOST, "--port", str(port),
            "--worker-urls", f"http://{HOST}:{fake.port}", "--policy", "round_robin",
            "--prometheus-port", str(servers.free_port())]  # fmt: skip
    server = bench.Server("vllm-router", argv, base_env(), folder)
    server.port = port
    server.wait_ready("/health", timeout=60)
    warm(server)
    return server


def start_relay(fake: bench.Server, args: argparse.Namespace, folder: str, client: str) -> bench.Server:
    port = servers.free_port()
    argv = [sys.executable, str(Path(__file__).resolve().with_name("sanic_relay.py")), "--port", str(port),
            "--upstream-port", str(fake.port), "--workers", "2", "--client", client]  # fmt: skip
    env = {**base_env(), "PYTHONPATH": str(args.venvs / AIOHTTP_LIB)}
    server = bench.Server(f"relay-{client}", argv, env, folder)
    server.port = port
    server.wait_ready("/health", timeout=60)
    warm(server)
    return server


def litellm_config(fake: bench.Server) -> str:
    return json.dumps({  # JSON is YAML
        "model_list": [{"model_name": bench.MODEL, "litellm_params": {
            "model": f"openai/{bench.MODEL}", "api_base": f"http://{HOST}:{fake.port}/v1", "api_key": "fake"}}],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }, indent=2)  # fmt: skip


def start_litellm(fake: bench.Server, args: argparse.Namespace, folder: str) -> bench.Server:
    port, config = servers.free_port(), Path(folder) / "config.yaml"
    config.write_text(litellm_config(fake) + "\n")
    argv = [str(args.commands["litellm"]), "--config", str(config), "--host", HOST, "--port", str(port),
            "--num_workers", str(LITELLM_WORKERS)]  # fmt: skip
    server = bench.Server("litellm", argv, {**base_env(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}, folder)
    server.port = port
    server.wait_ready("/health/liveliness", timeout=180)
    deadline = time.monotonic() + 120  # every worker started, as its log tells
    while Path(server.log.name).read_bytes().count(b"Application startup complete") < LITELLM_WORKERS:
        if time.monotonic() > deadline or server.popen.poll() is not None:
            raise RuntimeError(f"litellm's workers did not all start (log {server.log.name})")
        time.sleep(0.2)
    warm(server)
    return server


def warm(server: bench.Server, count: int = 20) -> None:
    """A few requests, so that the first measured ones find connections and caches ready."""
    body = bodies.chat_targets(stream=False)[0].body
    request = urllib.request.Request(f"http://{HOST}:{server.port}{PATH}", body, {"Content-Type": "application/json"})
    for _ in range(count):
        with servers._opener.open(request, timeout=30) as response:
            response.read()
    time.sleep(1.0)


STARTERS: dict[str, Callable[[bench.Server, argparse.Namespace, str], bench.Server]] = {
    "gateway": start_gateway, "vllm-router": start_router, "litellm": start_litellm,
    **{name: functools.partial(start_relay, client=name.removeprefix("relay-")) for name in RELAYS}}  # fmt: skip
