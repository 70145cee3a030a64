from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

from gateway.observability.logs import ATOMIC_WRITE_BYTES, AccessLog, JSONFormatter
from gateway.observability.metrics import usage_tokens
from gateway.observability.prometheus_patch import FastCounter as _Counter
from gateway.observability.prometheus_patch import FastGauge as _Gauge
from gateway.observability.prometheus_patch import FastHistogram as _Histogram
from gateway.observability.prometheus_patch import deferred_value_class as _deferred_value_class
from gateway.observability.prometheus_patch import flush_pending_writes, write_after_each_loop_step


def test_usage_is_read_from_the_end_of_a_body() -> None:
    body = b'{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":30,"total_tokens":38,"completion_tokens":8}}'
    assert usage_tokens(body) == (30, 8)
    stream_event = b'data: {"choices":[],"usage":{"prompt_tokens":16,"total_tokens":20,"completion_tokens":4}}\n\n'
    assert usage_tokens(stream_event) == (16, 4)
    assert usage_tokens(b'{"usage":{"prompt_tokens":6,"total_tokens":6}}') == (6, 0)
    assert usage_tokens(b'{"data":[]}') is None


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", (), None)
    record.request_id = "abc"
    record.status = 200
    line = orjson.loads(JSONFormatter().format(record))
    assert line["message"] == "request" and line["level"] == "INFO" and line["logger"] == "gateway.access"
    assert line["request_id"] == "abc" and line["status"] == 200
    assert line["time"].endswith("Z")


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


class RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_access_lines_leave_after_the_loop_step_in_whole_lines_of_at_most_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = RecordingStream()
    access = AccessLog()
    access.logger = logging.Logger("gateway.access.test", logging.INFO)  # noqa: LOG001 - kept out of the registry
    access.logger.propagate = False
    access.logger.addHandler(logging.StreamHandler(stream))

    async def one_step_of_requests() -> int:
        access.write_after_each_loop_step(asyncio.get_running_loop())
        for number in range(40):
            access.write({"request_id": f"r{number}", "path": "/v1/chat/completions", "note": "x" * 200})
        written_in_the_step = len(stream.writes)
        await asyncio.sleep(0)
        access.write_after_each_loop_step(None)
        return written_in_the_step

    assert asyncio.run(one_step_of_requests()) == 0
    assert 1 < len(stream.writes) < 40  # batched, yet never more than PIPE_BUF bytes per write
    assert all(len(text.encode()) <= ATOMIC_WRITE_BYTES and text.endswith("\n") for text in stream.writes)
    lines = "".join(stream.writes).splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"r{n}" for n in range(40)]
    access.write({"request_id": "outside"})  # outside a serving worker: written at once
    assert orjson.loads(stream.writes[-1])["request_id"] == "outside"


def test_access_lines_written_directly_match_the_formatters_lines() -> None:
    stream = RecordingStream()
    access = AccessLog()
    access.logger = logging.Logger("gateway.access", logging.INFO)  # noqa: LOG001 - not the real one
    access.logger.propagate = False
    access.logger.addHandler(logging.StreamHandler(stream))
    fields = {"request_id": "r1", "method": "POST", "status": 200, "duration_ms": 1.25, "route": None}
    access.write(fields)
    access.write({})
    direct, empty = (orjson.loads(text) for text in stream.writes)

    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    formatted = orjson.loads(JSONFormatter().format(record))
    assert list(direct) == list(formatted) == ["time", "level", "logger", "message", *fields]
    assert {key: value for key, value in direct.items() if key != "time"} == {
        key: value for key, value in formatted.items() if key != "time"
    }
    assert direct["time"].endswith("Z") and len(direct["time"]) == len("2026-11-26T19:00:00.123Z")
    assert empty == {"time": empty["time"], "level": "INFO", "logger": "gateway.access", "message": "request"}


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


def test_a_stream_reports_its_first_chunk_and_usage_for_its_route_and_model() -> None:
    from prometheus_client import REGISTRY

    from gateway.observability.metrics import StreamMetrics

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    first_before = sample("gateway_stream_first_chunk_seconds_count", route="observed")
    tokens_before = sample("gateway_tokens_total", route="observed", model="m", kind="completion")
    stream = StreamMetrics("observed", "m", started=time.perf_counter())
    stream.first_chunk()
    stream.usage(b'data: {"usage":{"prompt_tokens":5,"total_tokens":12,"completion_tokens":7}}\n\n')
    assert sample("gateway_stream_first_chunk_seconds_count", route="observed") == first_before + 1
    assert sample("gateway_tokens_total", route="observed", model="m", kind="completion") == tokens_before + 7
    StreamMetrics("observed", "m", started=None).first_chunk()  # a request Sanic refused early: no time
    assert sample("gateway_stream_first_chunk_seconds_count", route="observed") == first_before + 1
