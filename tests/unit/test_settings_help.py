from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from gateway.settings import Settings
from gateway.settings_help import VARIABLES, render_env_example
from gateway.settings_loader import load_settings

ROOT = Path(__file__).resolve().parents[2]
DESCRIBED = {variable.name for variable in VARIABLES}
# Fallback names, described with the variable they stand in for.
FALLBACKS = {"PORT": "API_PORT", "WEB_CONCURRENCY": "WORKERS"}


class _Recording(Mapping[str, str]):
    """An empty environment that notes every name the settings ask it for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_every_variable_the_settings_read_is_described() -> None:
    environment = _Recording()
    load_settings(environment, env_file=None)
    asked = {FALLBACKS.get(name, name) for name in environment.asked}
    assert asked - DESCRIBED == set()
    # Routes and their policies are read from all the values at once (by prefix), not name by name.
    assert DESCRIBED - asked == {"MODEL_ROUTE_<KEY>", "VLLM_BASE_URL", "ROUTING_POLICY_<KEY>"}


def test_env_example_is_every_variable_at_its_default() -> None:
    assert (ROOT / ".env.example").read_text() == render_env_example(), (
        ".env.example is out of date: rewrite it with the command in its head"
    )
    # Loaded, it is the defaults, but for its one example route (routes have no default).
    loaded = load_settings({}, env_file=ROOT / ".env.example")
    assert loaded == dataclasses.replace(
        Settings(), routes={"tiny": ("http://127.0.0.1:8000/v1",)}, workers=os.cpu_count() or 1
    )


def test_help_prints_every_setting_and_exits_without_serving() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        check=False,
        cwd=ROOT,
        env={**os.environ, "API_PORT": "not-a-port"},  # never read: --help serves nothing
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m gateway")
    for name in DESCRIBED:
        assert f"\n  {name}  (default: " in result.stdout


def test_an_unknown_argument_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", "80"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --port 80" in result.stderr


def test_configuration_doc_has_a_row_for_every_variable() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")}
    documented = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    assert DESCRIBED - documented == set(), "variables without a row in docs/configuration.md"
    assert set(FALLBACKS) - documented == set(), "fallback names missing from docs/configuration.md"
