"""deploy/*.service: the systemd units, checked by `systemd-analyze verify` where it is installed."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings_loader import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = {"gateway.service": "gateway.service", "vllm@.service": "vllm@chat.service"}

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def service_section(name: str) -> dict[str, list[str]]:
    """The [Service] directives of a unit, each with all its values in order (they may repeat)."""
    directives: dict[str, list[str]] = {}
    section = ""
    for raw in (DEPLOY / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


def one(service: dict[str, list[str]], key: str) -> str:
    (value,) = service[key]
    return value


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    """What the unit's Environment= lines set (none of them quotes a value)."""
    return dict(item.split("=", 1) for line in service.get("Environment", []) for item in line.split())


@functools.cache
def verify_flags() -> tuple[str, ...]:
    """--man=no: the units name no man pages. --recursive-errors=no (systemd 250+): a broken unit
    elsewhere on this machine that ours are ordered against is not theirs to report."""
    usage = subprocess.run(
        ["systemd-analyze", "verify", "--help"], check=False, capture_output=True, text=True, timeout=30
    ).stdout
    return ("--man=no", "--recursive-errors=no") if "--recursive-errors" in usage else ("--man=no",)


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
        ["systemd-analyze", "verify", *verify_flags(), str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
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
    ("name", "edit"),
    [
        ("gateway.service", ("Type=exec", "Type=bogus")),
        ("gateway.service", ("KillMode=mixed", "KillMode=gently")),
        ("gateway.service", ("ExecStart=", "ExecStrat=")),
        ("vllm@.service", ("TimeoutStartSec=900", "TimeoutStartSec=forever")),
        ("vllm@.service", ("ProtectSystem=full", "ProtectSytem=full")),
    ],
)
def test_a_broken_unit_is_reported(name: str, edit: tuple[str, str], tmp_path: Path) -> None:
    status, complaints = verify(installable_copy(name, tmp_path, edit=edit))
    assert status != 0 or complaints, "systemd-analyze verify would not catch a broken unit"


def test_systemd_waits_longer_than_the_gateway_drains() -> None:
    service = service_section("gateway.service")
    grace = load_settings({}, env_file=None).graceful_shutdown_seconds
    assert float(one(service, "TimeoutStopSec")) > grace + 5  # the drain, then the workers' own stop
    assert one(service, "KillSignal") == "SIGTERM"
    # SIGTERM to the main process only: it stops its workers after the drain.
    assert one(service, "KillMode") == "mixed"
    assert one(service, "ExecStart").endswith("-m gateway")


def test_the_metrics_folder_is_writable_under_the_read_only_system() -> None:
    service = service_section("gateway.service")
    assert one(service, "ProtectSystem") == "strict"
    # The folder systemd creates empty at each start: the gateway cannot make one below it in time.
    assert environment(service)["PROMETHEUS_MULTIPROC_DIR"] == f"/run/{one(service, 'RuntimeDirectory')}"


def test_the_gateway_starts_with_the_units_metrics_folder(tmp_path: Path) -> None:
    service = service_section("gateway.service")
    run = tmp_path / "run"
    (run / one(service, "RuntimeDirectory")).mkdir(parents=True)  # what RuntimeDirectory= makes
    folder = Path(environment(service)["PROMETHEUS_MULTIPROC_DIR"].replace("/run", str(run), 1))
    # Importing the entry point builds every metric, and prometheus-client opens their files then.
    result = subprocess.run(
        [sys.executable, "-c", "import gateway.__main__"],
        env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(folder.glob("*.db"))


def readme_env_files() -> dict[str, dict[str, str]]:
    """The instance files deploy/README.md writes (`sudo tee /etc/vllm/NAME.env <<'ENV' ... ENV`)."""
    readme = (DEPLOY / "README.md").read_text()
    found = re.findall(r"tee (/etc/vllm/\S+\.env) <<'ENV'\n(.*?)^ENV$", readme, flags=re.DOTALL | re.MULTILINE)
    return {path: dict(line.split("=", 1) for line in body.splitlines()) for path, body in found}


def test_each_vllm_instance_reads_its_own_settings() -> None:
    service = service_section("vllm@.service")
    assert one(service, "EnvironmentFile") == "/etc/vllm/%i.env"
    command = one(service, "ExecStart")
    assert "--port ${SERVE_PORT}" in command
    needed = set(re.findall(r"\$\{?(\w+)", command)) - set(environment(service))
    files = readme_env_files()
    assert len(files) == 2
    for path, values in files.items():
        assert needed <= set(values), f"{path} lacks {needed - set(values)}"


def test_no_vllm_setting_is_taken_for_one_of_vllms_own() -> None:
    # vLLM reads VLLM_PORT as the first of its internal ports (the next instance's port would be
    # among them), and warns about every VLLM_* name it does not know.
    service = service_section("vllm@.service")
    expanded = set(re.findall(r"\$\{?(\w+)", one(service, "ExecStart")))
    assert not {name for name in expanded if name.startswith("VLLM_")}
    written = set(environment(service)).union(*readme_env_files().values())
    assert {name for name in written if name.startswith("VLLM_")} <= {"VLLM_ENABLE_RESPONSES_API_STORE"}


def test_a_vllm_stop_lets_requests_finish_before_systemd_kills_it() -> None:
    service = service_section("vllm@.service")
    assert "--shutdown-timeout ${SERVE_SHUTDOWN_TIMEOUT}" in one(service, "ExecStart")
    drain = float(environment(service)["SERVE_SHUTDOWN_TIMEOUT"])
    assert drain > 0  # vLLM's default, 0, aborts the requests in flight
    assert float(one(service, "TimeoutStopSec")) >= drain + 10
    assert one(service, "KillSignal") == "SIGTERM"
    assert float(one(service, "TimeoutStartSec")) >= 300  # a model loads for minutes
