"""deploy/*.service: the systemd units, checked by `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {"gateway.service": "gateway.service", "vllm@.service": "vllm@chat.service"}

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # directives are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def installable_copy(name: str, folder: Path, *, edit: tuple[str, str] | None = None) -> Path:
    """The unit with the paths of an installation that this machine lacks pointed at real ones."""
    text = (DEPLOY / name).read_text()
    text = re.sub(r"^(ExecStart=)\S+", rf"\g<1>{sys.executable}", text, flags=re.MULTILINE)
    text = re.sub(r"^(WorkingDirectory=)\S+", rf"\g<1>{folder}", text, flags=re.MULTILINE)
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    copy = folder / UNITS[name]
    copy.write_text(text)
    return copy


def verify(unit: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], check=False, capture_output=True, text=True, timeout=30
    )
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if unit.name in line]


@needs_systemd
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    status, complaints = verify(installable_copy(name, tmp_path))
    assert (status, complaints) == (0, [])


@needs_systemd
@pytest.mark.parametrize(
    "edit", [("Type=exec", "Type=bogus"), ("KillMode=mixed", "KillMode=gently"), ("ExecStart=", "ExecStrat=")]
)
def test_a_broken_unit_is_reported(edit: tuple[str, str], tmp_path: Path) -> None:
    status, complaints = verify(installable_copy("gateway.service", tmp_path, edit=edit))
    assert status != 0 or complaints, "systemd-analyze verify would not catch a broken unit"


def test_systemd_waits_longer_than_the_gateway_drains() -> None:
    service = read_unit("gateway.service")["Service"]
    grace = load_settings({}, env_file=None).graceful_shutdown_seconds
    assert float(service["TimeoutStopSec"]) > grace + 5  # the drain, then the workers' own stop
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only: it stops its workers after the drain.
    assert service["KillMode"] == "mixed"
    assert service["ExecStart"].endswith("-m gateway")


def test_the_metrics_folder_is_writable_under_the_read_only_system() -> None:
    service = read_unit("gateway.service")["Service"]
    assert service["ProtectSystem"] == "strict"
    runtime = service["RuntimeDirectory"]
    assert f"PROMETHEUS_MULTIPROC_DIR=/run/{runtime}/" in service["Environment"]


def test_each_vllm_instance_reads_its_own_settings() -> None:
    service = read_unit("vllm@.service")["Service"]
    assert service["EnvironmentFile"] == "/etc/vllm/%i.env"
    assert "--port ${VLLM_PORT}" in service["ExecStart"]
