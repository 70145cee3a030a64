"""
Everything of prometheus-client's internals the gateway relies on, in one place.

Two changes to the stock library, both for CPU per request, both checked at import by
`self_check()` (which falls back to the stock classes, with a warning, if this release of the
library no longer behaves as they assume) and bounded in requirements.txt (prometheus-client<0.27):

- **Deferred multiprocess writes** (`deferred_value_class`). The stock multiprocess value writes
  its mmap file on every change, about ten times per relayed request, and calls `os.getpid()` (a
  system call) on each to notice a fork. Workers are spawned, never forked, so the pid is read
  once; and while a worker serves (`write_after_each_loop_step`), changes are written after the
  current step of its event loop, once per value however many requests changed it: after the
  response left, at least as fresh as any scrape that can follow it. A scrape writes its own
  worker's changes first (`flush_pending_writes`).
- **Cheaper family methods** (`FastCounter`, `FastGauge`, `FastHistogram`). The stock
  `inc`/`observe` check on every call, in two Python calls, that the metric is not the parent of
  labelled children, and `Histogram.observe` looks for its bucket in a Python loop (ten rounds for
  a stream's length). These do the same in a few attribute reads and a bisection; any other use
  (an exemplar, a negative amount, a parent) goes to the stock method, errors and all.

Measured with bench/count_instructions.py (callgrind, 200 streams through one worker, /v1):
722,491 user-space instructions per stream with the stock classes, 684,622 with these (5.2% less,
before counting the stock path's `getpid()` system calls); docs/performance.md, "Library patches".
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

from gateway.observability.loop_step import AfterLoopStep

__all__ = [
    "FastCounter",
    "FastGauge",
    "FastHistogram",
    "deferred_value_class",
    "families",
    "flush_pending_writes",
    "install",
    "self_check",
    "write_after_each_loop_step",
]

logger = logging.getLogger("gateway")

ENV = "PROMETHEUS_MULTIPROC_DIR"

_pending_writes: dict[Any, None] = {}  # values changed since their last write to the shared file


def _write_pending_values() -> None:
    pending = list(_pending_writes)
    _pending_writes.clear()  # first: a failed write must not stop later flushes from being scheduled
    for value in pending:
        value._file.write_value(value._key, value._value, value._timestamp)


_writes = AfterLoopStep(_write_pending_values)


def write_after_each_loop_step(loop: asyncio.AbstractEventLoop | None) -> None:
    """Defer the writes of multiprocess values to the end of the current step of `loop`; None:
    write at once again (what is pending is written now)."""
    _writes.bind(loop)


def flush_pending_writes() -> None:
    """Write every changed value to this process's file (where scrapes read it)."""
    _writes.run()


def deferred_value_class(pid: int) -> type:
    """prometheus-client's multiprocess value for process `pid`, writing its file once per step."""
    stock = values.MultiProcessValue(process_identifier=lambda stock_pid=pid: stock_pid)

    class DeferredValue(stock):  # type: ignore[misc, valid-type]
        # The first change since the last write schedules the next one; later ones only join it.

        def inc(self, amount: float) -> None:
            self._value += amount
            self._timestamp = 0.0
            _pending_writes[self] = None
            if len(_pending_writes) == 1:
                _writes.request()

        def set(self, value: float, timestamp: float | None = None) -> None:
            self._value = value
            self._timestamp = timestamp or 0.0
            _pending_writes[self] = None
            if len(_pending_writes) == 1:
                _writes.request()

    return DeferredValue


class FastCounter(Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is None and amount >= 0 and (self._labelvalues or not self._labelnames):
            self._value.inc(amount)
        else:
            super().inc(amount, exemplar)


class FastGauge(Gauge):
    def inc(self, amount: float = 1) -> None:
        if not self._is_most_recent and (self._labelvalues or not self._labelnames):
            self._value.inc(amount)
        else:
            super().inc(amount)

    def dec(self, amount: float = 1) -> None:
        if not self._is_most_recent and (self._labelvalues or not self._labelnames):
            self._value.inc(-amount)
        else:
            super().dec(amount)


class FastHistogram(Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if exemplar is not None or not (self._labelvalues or not self._labelnames):
            super().observe(amount, exemplar)
            return
        self._sum.inc(amount)
        bucket = bisect_left(self._upper_bounds, amount)  # the first bound >= amount; the last is +Inf
        if amount <= self._upper_bounds[bucket]:  # false only for NaN, which the stock loop counts nowhere
            self._buckets[bucket].inc(1)


def _exercise(counter: type[Counter], gauge: type[Gauge], histogram: type[Histogram], folder: str) -> dict[str, float]:
    """The same changes through the given classes, as a scrape of `folder` reads them."""
    registry = CollectorRegistry()
    requests = counter("check_requests", "c", ["route"], registry=registry)
    streams = gauge("check_streams", "g", multiprocess_mode="livesum", registry=registry)
    durations = histogram("check_seconds", "h", ["route"], buckets=(0.1, 1.0), registry=registry)
    requests.labels("a").inc()
    requests.labels("a").inc(2)
    streams.inc(3)
    streams.dec()
    for amount in (0.05, 0.1, 0.5, 7.0):
        durations.labels("a").observe(amount)
    flush_pending_writes()
    scraped = CollectorRegistry()
    multiprocess.MultiProcessCollector(scraped, path=folder)
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for metric in scraped.collect()
        for sample in metric.samples
    }


def self_check() -> str | None:
    """None if the patched classes give what the stock ones give on this release; else why not."""
    saved_env, saved_class, saved_loop = os.environ.get(ENV), values.ValueClass, _writes.loop
    _writes.bind(None)  # the check's writes at once, whatever loop the process serves
    try:
        results = []
        for pid, patched in ((1, False), (2, True)):
            with tempfile.TemporaryDirectory(prefix="gateway-metrics-check-") as folder:
                os.environ[ENV] = folder
                if patched:
                    values.ValueClass = deferred_value_class(pid)
                    results.append(_exercise(FastCounter, FastGauge, FastHistogram, folder))
                else:
                    values.ValueClass = values.MultiProcessValue(process_identifier=lambda stock_pid=pid: stock_pid)
                    results.append(_exercise(Counter, Gauge, Histogram, folder))
        stock, patched_result = results
        if not stock or patched_result != stock:
            return f"the patched metrics read {patched_result}, the stock ones {stock}"
        return None
    except Exception as exc:  # noqa: BLE001 (any change in the internals used above)
        return f"{type(exc).__name__}: {exc}"
    finally:
        _writes.bind(saved_loop)
        values.ValueClass = saved_class
        if saved_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved_env


_active = False


def install() -> bool:
    """In each process, before its metrics are created: the patched classes if they pass the check."""
    global _active
    problem = self_check()
    if problem is not None:
        logger.warning(
            "prometheus-client's internals differ from what gateway/patches/prometheus.py expects (%s): "
            "using its stock classes",
            problem,
        )
        _active = False
        return False
    if os.environ.get(ENV):
        values.ValueClass = deferred_value_class(os.getpid())
    _active = True
    return True


def families() -> tuple[type[Counter], type[Gauge], type[Histogram]]:
    """The counter, gauge and histogram classes to build metrics from (after `install()`)."""
    return (FastCounter, FastGauge, FastHistogram) if _active else (Counter, Gauge, Histogram)
