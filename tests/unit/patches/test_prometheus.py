"""
gateway/patches/prometheus.py: the start-up check that keeps the patched classes
honest, and how they behave: values written after the loop step, the same samples and the same
refusals as prometheus-client's own classes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

from gateway.patches import prometheus as prometheus_patch
from gateway.patches.prometheus import FastCounter as _Counter
from gateway.patches.prometheus import FastGauge as _Gauge
from gateway.patches.prometheus import FastHistogram as _Histogram
from gateway.patches.prometheus import deferred_value_class as _deferred_value_class
from gateway.patches.prometheus import flush_pending_writes, write_after_each_loop_step


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


def _scraped(folder: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return {s.name: s.value for metric in registry.collect() for s in metric.samples}


def test_multiprocess_values_reach_the_shared_file_after_the_current_loop_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = _deferred_value_class(pid=4242)
    registry = CollectorRegistry()
    monkeypatch.setattr(values, "ValueClass", value_class)
    counter = Counter("relayed", "Relayed requests.", ["route"], registry=registry)

    async def requests_in_one_step() -> list[float]:
        write_after_each_loop_step(asyncio.get_running_loop())  # what a worker does when it starts
        seen = []
        for _ in range(3):
            counter.labels("chat").inc()
        seen.append(_scraped(tmp_path).get("relayed_total", 0.0))  # another worker's scrape, same step
        await asyncio.sleep(0)
        seen.append(_scraped(tmp_path)["relayed_total"])
        counter.labels("chat").inc()
        flush_pending_writes()  # what a scrape served by this worker does first
        seen.append(_scraped(tmp_path)["relayed_total"])
        counter.labels("chat").inc()
        write_after_each_loop_step(None)  # what a worker does when it stops
        seen.append(_scraped(tmp_path)["relayed_total"])
        return seen

    assert asyncio.run(requests_in_one_step()) == [0.0, 3.0, 4.0, 5.0]
    counter.labels("chat").inc()  # outside a serving worker: written at once
    assert _scraped(tmp_path)["relayed_total"] == 6.0


def test_every_value_changed_in_a_step_is_written_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", _deferred_value_class(pid=4343))
    registry = CollectorRegistry()
    counter = Counter("relayed", "Relayed requests.", ["route"], registry=registry)
    gauge = Gauge("open", "Open streams.", multiprocess_mode="livesum", registry=registry)

    def scraped() -> dict[tuple[str, str], float]:
        collector = CollectorRegistry()
        multiprocess.MultiProcessCollector(collector, path=str(tmp_path))
        return {(s.name, s.labels.get("route", "")): s.value for m in collector.collect() for s in m.samples}

    async def steps() -> list[dict[tuple[str, str], float]]:
        write_after_each_loop_step(asyncio.get_running_loop())
        seen = []
        for _ in range(2):  # two steps, each changing several values, one of them twice
            counter.labels("chat").inc()
            gauge.inc(2)
            counter.labels("embed").inc()
            counter.labels("chat").inc()
            await asyncio.sleep(0)
            seen.append(scraped())
        write_after_each_loop_step(None)
        return seen

    first, second = asyncio.run(steps())
    assert (first[("relayed_total", "chat")], first[("relayed_total", "embed")], first[("open", "")]) == (2, 1, 2)
    assert (second[("relayed_total", "chat")], second[("relayed_total", "embed")], second[("open", "")]) == (4, 2, 4)


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    ]


def test_the_cheaper_metric_families_count_as_prometheus_clients_own() -> None:
    buckets = (0.001, 0.01, 0.1, 1, 10)
    amounts = [0.0, 0.001, 0.0010001, 0.05, 0.1, 3.0, 10.0, 11.0, math.inf, math.nan, -1.0]
    results = []
    for counter, gauge, histogram in ((Counter, Gauge, Histogram), (_Counter, _Gauge, _Histogram)):
        registry = CollectorRegistry()
        requests = counter("requests", "r", ["route"], registry=registry)
        streams = gauge("streams", "s", registry=registry)
        durations = histogram("duration", "d", ["route"], buckets=buckets, registry=registry)
        for amount in amounts:
            durations.labels("a").observe(amount)
            requests.labels("a").inc()
            streams.inc(2)
            streams.dec()
        requests.labels("b").inc(2.5)
        results.append(_samples(registry))
    stock, ours = results
    assert repr(ours) == repr(stock)  # repr: NaN sums compare equal that way


def test_the_cheaper_metric_families_refuse_what_prometheus_client_refuses() -> None:
    registry = CollectorRegistry()
    requests = _Counter("requests", "r", ["route"], registry=registry)
    durations = _Histogram("duration", "d", ["route"], registry=registry)
    with pytest.raises(ValueError):
        requests.inc()  # a parent with label names has no value of its own
    with pytest.raises(ValueError):
        durations.observe(1.0)
    with pytest.raises(ValueError):
        requests.labels("a").inc(-1)
