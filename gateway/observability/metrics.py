"""
Prometheus metrics, summed over all worker processes.

prometheus-client decides at import time whether it runs in multiprocess mode, from
`PROMETHEUS_MULTIPROC_DIR`. The main process sets that variable (and empties the folder) in
`prepare_multiprocess_dir()` before it spawns the workers, which inherit it; every scrape then
reads all workers' files, so any worker answers with the sum. Without the variable (tests, a
single process) the default registry is used. Each worker marks itself dead when it stops, so
gauges count live workers only.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from gateway.errors import GatewayError
from gateway.patches import prometheus as prometheus_patch

__all__ = [
    "CONTENT_TYPE_LATEST",
    "Metrics",
    "StreamMetrics",
    "metrics",
    "prepare_multiprocess_dir",
    "render",
    "usage_tokens",
]

ENV = prometheus_patch.ENV  # PROMETHEUS_MULTIPROC_DIR
_CREATED_DIR_ENV = "GATEWAY_METRICS_DIR_CREATED"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')


def prepare_multiprocess_dir() -> None:
    """In the main process, before the workers start: a fresh folder for the workers' files."""
    configured = os.environ.get(ENV)
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counters of an earlier run must not be summed in
            stale.unlink()
    else:
        os.environ[ENV] = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[_CREATED_DIR_ENV] = "1"


def remove_multiprocess_dir() -> None:
    """In the main process, after the workers stopped: remove the folder if we made it."""
    if os.environ.pop(_CREATED_DIR_ENV, None) and os.environ.get(ENV):
        shutil.rmtree(os.environ.pop(ENV), ignore_errors=True)


def mark_worker_stopped() -> None:
    if os.environ.get(ENV):
        prometheus_patch.write_after_each_loop_step(None)
        multiprocess.mark_process_dead(os.getpid())


def render() -> bytes:
    if os.environ.get(ENV):
        prometheus_patch.flush_pending_writes()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def usage_tokens(body: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens from the `usage` object of a vLLM response, if it has one.

    Only the text after `"usage"` is searched: parsing a whole response (an embeddings list of
    thousands of floats) just for two integers would cost more than relaying it.
    """
    start = body.rfind(b'"usage"')
    if start < 0:
        return None
    tail = body[start : start + 400]
    prompt = _PROMPT_TOKENS.search(tail)
    completion = _COMPLETION_TOKENS.search(tail)
    if prompt is None:
        return None
    return int(prompt.group(1)), int(completion.group(1)) if completion else 0


def _cached_labels(family: Any) -> Callable[..., Any]:
    """`family.labels(...)`, with each child kept: the hot path then costs one dict lookup.

    Label values are route keys, endpoints, statuses and served model names: a bounded set.
    """
    children: dict[tuple[str, ...], Any] = {}

    def labels(*values: str) -> Any:
        child = children.get(values)
        if child is None:
            child = children[values] = family.labels(*values)
        return child

    return labels


# prometheus-client opens its files in PROMETHEUS_MULTIPROC_DIR as soon as the families below are
# built, at import: before the main process's `prepare_multiprocess_dir()` could create a folder
# that an operator named but nobody made yet (a subfolder of systemd's RuntimeDirectory, say).
if os.environ.get(ENV):
    Path(os.environ[ENV]).mkdir(parents=True, exist_ok=True)
# The stock classes, or gateway/patches/prometheus.py's cheaper ones when they pass its start-up check.
prometheus_patch.install()
_Counter, _Gauge, _Histogram = prometheus_patch.families()


class Metrics:
    """The gateway's metric families; one instance per process (`metrics` below).

    Use the `*_for(...)` look-ups on the request path; they cache the labelled children.
    """

    def __init__(self) -> None:
        self.requests = _Counter(
            "gateway_requests_total",
            "Requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"],
        )
        self.request_duration = _Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of its response (a stream's whole length).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
        )
        self.upstream_duration = _Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent on the upstream call, by route and model.",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
        )
        self.upstream_errors = _Counter(
            "gateway_upstream_errors_total",
            "Upstream failures by route and kind (unavailable, timeout, protocol, http_5xx, ...).",
            ["route", "kind"],
        )
        self.first_chunk = _Histogram(
            "gateway_stream_first_chunk_seconds",
            "Time from request to the first upstream event of a stream.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        self.active_streams = _Gauge("gateway_active_streams", "SSE streams open now.", multiprocess_mode="livesum")
        self.tokens = _Counter(
            "gateway_tokens_total",
            "Tokens reported in upstream usage, by route, model and kind (prompt, completion).",
            ["route", "model", "kind"],
        )
        self.rate_limited = _Counter("gateway_rate_limited_total", "Requests refused with 429.")
        self.worker_restarts = _Counter(
            "gateway_worker_restarts_total", "Worker processes started in place of one that died."
        )
        self.redis_fallbacks = _Counter(
            "gateway_redis_fallbacks_total",
            "Operations served locally because Redis failed, by purpose.",
            ["purpose"],
        )
        self.redis_errors = _Counter(
            "gateway_redis_errors_total",
            "Errors that Redis answered (a command or script bug, not an outage), by purpose.",
            ["purpose"],
        )
        self.upstream_retries = _Counter(
            "gateway_upstream_retries_total", "Requests retried on another replica, by route.", ["route"]
        )
        self.replica_requests = _Counter(
            "gateway_replica_requests_total", "Upstream attempts by replica.", ["route", "replica"]
        )
        self.replica_errors = _Counter(
            "gateway_replica_errors_total", "Failed upstream attempts by replica.", ["route", "replica"]
        )
        self.replica_in_flight = _Gauge(
            "gateway_replica_in_flight",
            "Requests in flight by replica.",
            ["route", "replica"],
            multiprocess_mode="livesum",
        )
        self.replica_ejections = _Counter(
            "gateway_replica_ejections_total", "Times a replica was taken out of rotation.", ["route", "replica"]
        )
        self.routing_decisions = _Counter(
            "gateway_routing_decisions_total",
            "Replica choices by route, policy and reason (prefix_hit, affinity, load_override, no_match, fallback...).",
            ["route", "policy", "reason"],
        )
        self.prefix_index_shared = _Gauge(
            "gateway_prefix_index_shared",
            "1 while the prefix index is shared with the other instances through Redis, 0 while it is this machine's own.",
            multiprocess_mode="livemin",
        )
        self.prefix_index_updates = _Counter(
            "gateway_prefix_index_updates_total",
            "Prefix-index entries sent to the other instances (published) and learned from them (received).",
            ["direction"],
        )

        self.requests_for = _cached_labels(self.requests)
        self.request_duration_for = _cached_labels(self.request_duration)
        self.upstream_duration_for = _cached_labels(self.upstream_duration)
        self.upstream_errors_for = _cached_labels(self.upstream_errors)
        self.first_chunk_for = _cached_labels(self.first_chunk)
        self.tokens_for = _cached_labels(self.tokens)
        self.replica_requests_for = _cached_labels(self.replica_requests)
        self.routing_decisions_for = _cached_labels(self.routing_decisions)

    def count_upstream_error(self, route: str, failure: GatewayError | int | str) -> None:
        """One upstream failure: a gateway error (its code), an HTTP status (`http_503`), or a kind."""
        if isinstance(failure, GatewayError):
            kind = failure.code.removeprefix("upstream_")
        elif isinstance(failure, int):
            kind = f"http_{failure}"
        else:
            kind = failure
        self.upstream_errors_for(route, kind).inc()

    def count_tokens(self, route: str, model: str, body: bytes) -> None:
        usage = usage_tokens(body)
        if usage is not None:
            self.tokens_for(route, model, "prompt").inc(usage[0])
            self.tokens_for(route, model, "completion").inc(usage[1])


metrics = Metrics()


class StreamMetrics:
    """What one stream reports while it runs, counted for its route and model (a `StreamObserver`)."""

    __slots__ = ("_model", "_route", "_started")

    def __init__(self, route: str, model: str, started: float | None) -> None:
        self._route, self._model, self._started = route, model, started

    def first_chunk(self) -> None:
        """Time from the request to the stream's first upstream event."""
        if self._started is not None:
            metrics.first_chunk_for(self._route).observe(time.perf_counter() - self._started)

    def usage(self, events: bytes) -> None:
        metrics.count_tokens(self._route, self._model, events)
