"""requirements.txt, requirements-dev.txt and their locks: what the set-up scripts install.

The ranges are for people who embed the package; dev.sh, test.sh and CI install the locks. These
tests fail when the two drift apart (a range edited without running scripts/lock.sh), when an
imported library is not declared, or when a locked version is not the one the suite runs on.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

# The libraries whose internals the gateway reaches into: a new release may break them silently.
REACHED_INTO = ("sanic", "sanic-ext", "prometheus-client")


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: int

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        return spec.version

    def applies_here(self) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate()  # this interpreter and platform


def read_ranges(name: str) -> dict[str, Requirement]:
    """A requirements file's requirements by canonical name, following `-r` includes."""
    ranges: dict[str, Requirement] = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            ranges.update(read_ranges(line[3:].strip()))
        elif line:
            requirement = Requirement(line)
            ranges[canonicalize_name(requirement.name)] = requirement
    return ranges


def read_lock(name: str) -> dict[str, Pin]:
    """A lock file's pins by canonical name (uv pip compile --generate-hashes output)."""
    pins: dict[str, Pin] = {}
    current: Requirement | None = None
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.strip().rstrip("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            assert current is not None, f"{name}: a hash before any requirement"
            key = canonicalize_name(current.name)
            pins[key] = Pin(current, pins[key].hashes + 1)
            continue
        current = Requirement(line)
        pins[canonicalize_name(current.name)] = Pin(current, 0)
    return pins


def third_party_imports() -> set[str]:
    """Top-level modules that gateway/ imports from outside the standard library."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "gateway"}


@pytest.mark.parametrize(
    ("ranges_file", "lock_file"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_every_range_is_locked_to_a_version_inside_it(ranges_file: str, lock_file: str) -> None:
    pins = read_lock(lock_file)
    for name, requirement in read_ranges(ranges_file).items():
        assert name in pins, f"{name} is in {ranges_file} but not in {lock_file}: run scripts/lock.sh"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock_file} pins {name}=={version}, outside {ranges_file}'s {requirement.specifier}: run scripts/lock.sh"
        )


@pytest.mark.parametrize("lock_file", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_is_exact_and_hashed(lock_file: str) -> None:
    pins = read_lock(lock_file)
    assert len(pins) > 10
    for name, pin in pins.items():
        assert [spec.operator for spec in pin.requirement.specifier] == ["=="], name
        assert pin.hashes >= 1, f"{lock_file}: {name} has no hash, so pip cannot check it"


def test_the_dev_lock_holds_the_runtime_lock_unchanged() -> None:
    # One venv serves both dev.sh and test.sh (scripts/_env.sh), so the versions must agree.
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    for name, pin in runtime.items():
        assert name in dev, f"{name} is locked for the runtime but not in requirements-dev.lock"
        assert dev[name].version == pin.version, f"{name}: {pin.version} vs {dev[name].version}"


def test_every_library_the_gateway_imports_is_declared() -> None:
    # httptools was imported by gateway/upstream/transport.py and only installed because Sanic needs it.
    declared = set(read_ranges("requirements.txt"))
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(third_party_imports()):
        owners = {canonicalize_name(owner) for owner in distributions.get(module, [module])}
        assert owners & declared, f"gateway/ imports {module} ({owners}), not in requirements.txt"


def test_the_import_scan_sees_the_libraries_the_gateway_uses() -> None:
    assert {"sanic", "httpx", "httptools", "orjson", "redis", "prometheus_client"} <= (third_party_imports())


def test_libraries_reached_into_have_an_upper_bound() -> None:
    ranges = read_ranges("requirements.txt")
    for name in REACHED_INTO:
        operators = {spec.operator for spec in ranges[name].specifier}
        assert operators & {"<", "<=", "~=", "=="}, f"{name} needs an upper bound in requirements.txt"


def test_the_suite_runs_on_the_locked_versions() -> None:
    # What CI proves is what dev.sh installs: a venv drifted from the lock tests something else.
    for name, pin in read_lock("requirements-dev.lock").items():
        if not pin.applies_here():
            continue
        installed = importlib.metadata.version(name)
        assert installed == pin.version, (
            f"{name} {installed} is installed, requirements-dev.lock pins {pin.version}: "
            "run ./scripts/test.sh, which installs the lock"
        )
