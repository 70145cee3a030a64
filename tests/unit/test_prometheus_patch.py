"""gateway/observability/prometheus_patch.py: the start-up check that keeps the patched classes honest.

(How the patched classes behave, deferred writes and all, is in test_metrics_and_logs.py.)
"""

from __future__ import annotations

import logging

import pytest
from prometheus_client import Counter, Gauge, Histogram

from gateway.observability import prometheus_patch


def test_the_patched_classes_pass_on_the_installed_release() -> None:
    assert prometheus_patch.self_check() is None
    assert prometheus_patch.families() == (
        prometheus_patch.FastCounter,
        prometheus_patch.FastGauge,
        prometheus_patch.FastHistogram,
    )


def test_a_patch_that_counts_wrong_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def observe_without_buckets(self: Histogram, amount: float, exemplar: object = None) -> None:
        self._sum.inc(amount)  # type: ignore[attr-defined]

    monkeypatch.setattr(prometheus_patch.FastHistogram, "observe", observe_without_buckets)
    problem = prometheus_patch.self_check()
    assert problem is not None and "check_seconds_bucket" in problem


def test_internals_that_moved_are_caught_and_the_stock_classes_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As if a release renamed the private field the fast path reads.
    monkeypatch.delattr(Histogram, "_upper_bounds", raising=False)
    monkeypatch.setattr(
        prometheus_patch.FastHistogram,
        "observe",
        lambda self, amount, exemplar=None: self._renamed_bounds,
    )
    monkeypatch.setattr(prometheus_patch, "_active", True)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert prometheus_patch.install() is False
    assert prometheus_patch.families() == (Counter, Gauge, Histogram)
    assert "using its stock classes" in caplog.text
    assert "AttributeError" in caplog.text
