"""Reading vLLM's queue from its /metrics, and balancing on it (Replica.load)."""

from __future__ import annotations

import time

import httpx

from gateway.routing.engine_metrics import EngineMetricsReader, metrics_url, parse_engine_load
from gateway.routing.replicas import Replica
from gateway.settings import Settings
from gateway.shared.engine_load import KV_USAGE, READ_AT, RUNNING, WAITING
from gateway.upstream.client import Upstream

# As vLLM 0.32.0 writes them (../shared/notes/real-vllm-cpu.md), with a second engine.
PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-llama"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny-llama"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 5.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny-llama",reason="capacity"} 9.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny-llama"} 0.5
vllm:prefix_cache_hits_total{engine="0",model_name="tiny-llama"} 120.0
"""


def test_the_queue_gauges_are_summed_over_engines() -> None:
    assert parse_engine_load(PAGE) == [5.0, 4.0, 0.5]
    assert parse_engine_load("# nothing\nprocess_cpu_seconds_total 3.0\n") is None
    assert parse_engine_load("vllm:num_requests_running 2\nvllm:num_requests_waiting garbage\n") == [0.0, 2.0, 0.0]


def test_the_metrics_are_at_the_servers_root() -> None:
    assert metrics_url("http://10.0.0.1:8000/v1") == "http://10.0.0.1:8000/metrics"
    assert metrics_url("https://vllm.example/openai/v1") == "https://vllm.example/metrics"


async def test_a_reading_is_written_for_every_replica_of_the_url_and_a_failure_leaves_it() -> None:
    answers = {"http://a:1/metrics": httpx.Response(200, text=PAGE), "http://b:1/metrics": httpx.Response(500)}
    upstream = Upstream(Settings(), transport=httpx.MockTransport(lambda request: answers[str(request.url)]))
    first, same, other = Replica("http://a:1/v1"), Replica("http://a:1/v1"), Replica("http://b:1/v1")
    reader = EngineMetricsReader([first, same, other], upstream, interval=1.0, table=None)
    await reader.read_all()
    for replica in (first, same):
        assert [replica.engine[cell] for cell in (WAITING, RUNNING, KV_USAGE)] == [5.0, 4.0, 0.5]
        assert replica.engine[READ_AT] > 0
    assert other.engine[READ_AT] == 0.0  # never read: balanced on in-flight counts


def test_the_load_is_what_is_in_flight_plus_the_engines_waiting_queue_while_the_reading_is_fresh() -> None:
    replica = Replica("http://a:1/v1", engine_stale_after=3.0)
    replica.in_flight = 2
    assert replica.load() == 2  # no reading yet
    replica.engine[WAITING], replica.engine[RUNNING], replica.engine[READ_AT] = 5.0, 4.0, time.monotonic()
    assert replica.load() == 7.0  # the running ones are mostly in flight here already: not counted twice
    replica.in_flight += 3
    assert replica.load() == 10.0  # sent since the reading: counted at once
    replica.engine[READ_AT] = time.monotonic() - 4.0
    assert replica.load() == 5  # stale: this worker's own count
    assert replica.status()["engine"] is None
