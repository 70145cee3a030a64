"""gateway/lifecycle.py: what the main process prepares for its workers, and removes when it stops."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway import lifecycle
from gateway.patches.prometheus import ENV
from gateway.settings import Settings

ROUTES = {"MODEL_ROUTE_a": "http://127.0.0.1:9101/v1", "MODEL_ROUTE_b": "http://127.0.0.1:9102/v1"}


def main_process(settings: Settings) -> SimpleNamespace:
    """What the listeners read of Sanic's app in the main process: its settings and shared_ctx."""
    return SimpleNamespace(ctx=SimpleNamespace(settings=settings), shared_ctx=SimpleNamespace())


@pytest.fixture(autouse=True)
def no_metrics_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)  # restored after the test, whatever the listeners set


def test_the_main_process_makes_the_tables_its_workers_share(settings_from: Callable[..., Settings]) -> None:
    app = main_process(settings_from(RATE_LIMIT_PER_MIN="60", PROMETHEUS_ENABLE="false", **ROUTES))
    lifecycle.prepare_shared_state(app)  # type: ignore[arg-type]
    assert len(app.shared_ctx.rate_table) > 0  # one budget per client IP for the whole machine
    assert len(app.shared_ctx.ejections) > 0  # one view of replica health for the whole machine
    assert ENV not in os.environ


def test_without_a_rate_limit_there_is_no_rate_table(settings_from: Callable[..., Settings]) -> None:
    app = main_process(settings_from(RATE_LIMIT_PER_MIN="0", PROMETHEUS_ENABLE="false", **ROUTES))
    lifecycle.prepare_shared_state(app)  # type: ignore[arg-type]
    assert not hasattr(app.shared_ctx, "rate_table")


def test_the_metrics_folder_it_made_is_removed_when_it_stops(settings_from: Callable[..., Settings]) -> None:
    app = main_process(settings_from(**ROUTES))
    lifecycle.prepare_shared_state(app)  # type: ignore[arg-type]
    folder = Path(os.environ[ENV])  # inherited by the workers it spawns next
    assert folder.is_dir()
    lifecycle.remove_shared_state(app)  # type: ignore[arg-type]
    assert not folder.exists() and ENV not in os.environ


def test_a_metrics_folder_the_operator_named_is_kept_without_last_runs_counts(
    settings_from: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "metrics"
    monkeypatch.setenv(ENV, str(folder))
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"stale")
    app = main_process(settings_from(**ROUTES))
    lifecycle.prepare_shared_state(app)  # type: ignore[arg-type]
    assert folder.is_dir() and not list(folder.glob("*.db"))
    lifecycle.remove_shared_state(app)  # type: ignore[arg-type]
    assert folder.is_dir()
