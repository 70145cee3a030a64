"""The gateway's metrics: usage read from bodies, what a stream reports."""

from __future__ import annotations

import time

from gateway.observability.metrics import usage_tokens


def test_usage_is_read_from_the_end_of_a_body() -> None:
    body = b'{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":30,"total_tokens":38,"completion_tokens":8}}'
    assert usage_tokens(body) == (30, 8)
    stream_event = b'data: {"choices":[],"usage":{"prompt_tokens":16,"total_tokens":20,"completion_tokens":4}}\n\n'
    assert usage_tokens(stream_event) == (16, 4)
    assert usage_tokens(b'{"usage":{"prompt_tokens":6,"total_tokens":6}}') == (6, 0)
    assert usage_tokens(b'{"data":[]}') is None


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
