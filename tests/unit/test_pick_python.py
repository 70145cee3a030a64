"""scripts/pick_python.py: which interpreter the set-up scripts build .venv from."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pick_python.py"
spec = importlib.util.spec_from_file_location("pick_python", SCRIPT)
assert spec is not None and spec.loader is not None
pick_python = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pick_python)


def test_a_real_interpreter_is_measured_and_named_by_its_real_path() -> None:
    result = pick_python.measure(sys.executable)

    assert result is not None
    executable, seconds, version = result
    assert executable == os.path.realpath(executable)
    assert seconds > 0
    assert version == platform.python_version()


def test_what_is_not_a_usable_python_is_left_out(tmp_path: Path) -> None:
    too_old = tmp_path / "python3.10"
    too_old.write_text("#!/bin/sh\nexit 3\n")  # what the probe's version check exits with
    too_old.chmod(0o755)
    chatty = tmp_path / "python-chatty"
    chatty.write_text("#!/bin/sh\necho hello\n")  # exits 0, prints no measurement
    chatty.chmod(0o755)

    assert pick_python.measure(str(tmp_path / "missing")) is None
    assert pick_python.measure(str(too_old)) is None
    assert pick_python.measure(str(chatty)) is None


def test_what_a_site_hook_prints_first_is_skipped(tmp_path: Path) -> None:
    wrapper = tmp_path / "dir with space" / "python3"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "site hook says hi"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)

    result = pick_python.measure(str(wrapper))

    assert result is not None and result[2] == platform.python_version()


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, float, str] | None]:
    """Canned probe results by candidate name, instead of running interpreters."""
    results: dict[str, tuple[str, float, str] | None] = {}
    monkeypatch.setattr(pick_python, "measure", lambda candidate: results[candidate])
    return results


def test_the_fastest_comes_first_each_once(timings: dict, capsys: pytest.CaptureFixture[str]) -> None:
    timings.update({
        "/opt/pyenv/shims/python3.12": ("/opt/pyenv/versions/3.12.1/bin/python3.12", 0.080, "3.12.1"),
        "/usr/bin/python3.11": ("/usr/bin/python3.11", 0.036, "3.11.2"),
        "/usr/bin/python3": ("/usr/bin/python3.11", 0.034, "3.11.2"),  # the same executable by another name
        "/usr/bin/python3.13": None,  # not a usable Python
    })  # fmt: skip

    assert (
        pick_python.main(
            ["/usr/bin/python3.13", "/opt/pyenv/shims/python3.12", "/usr/bin/python3.11", "/usr/bin/python3"]
        )
        == 0
    )

    out, err = capsys.readouterr()
    assert out.split() == ["/usr/bin/python3.11", "/opt/pyenv/shims/python3.12"]  # named as given, first name wins
    assert "/usr/bin/python3.11 (3.11.2): 34 ms" in err


def test_interpreters_about_as_fast_keep_the_callers_order(timings: dict, capsys: pytest.CaptureFixture[str]) -> None:
    timings.update({
        "/usr/bin/python3.13": ("/usr/bin/python3.13", 0.0410, "3.13.0"),
        "/usr/bin/python3.11": ("/usr/bin/python3.11", 0.0400, "3.11.2"),
    })  # fmt: skip

    assert pick_python.main(["/usr/bin/python3.13", "/usr/bin/python3.11"]) == 0

    assert capsys.readouterr().out.split() == ["/usr/bin/python3.13", "/usr/bin/python3.11"]


def test_no_usable_interpreter_is_a_failure(timings: dict, capsys: pytest.CaptureFixture[str]) -> None:
    timings.update({"python3": None})

    assert pick_python.main(["python3"]) == 1
    assert capsys.readouterr().out == ""
