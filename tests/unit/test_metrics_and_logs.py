from __future__ import annotations

import logging

import orjson

from gateway.logs import JSONFormatter
from gateway.metrics import usage_tokens


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
