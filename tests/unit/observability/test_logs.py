"""JSON log lines and the batched access log."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest

from gateway.observability.logs import ATOMIC_WRITE_BYTES, AccessLog, JSONFormatter


def test_log_lines_are_json_with_extra_fields() -> None:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", (), None)
    record.request_id = "abc"
    record.status = 200
    line = orjson.loads(JSONFormatter().format(record))
    assert line["message"] == "request" and line["level"] == "INFO" and line["logger"] == "gateway.access"
    assert line["request_id"] == "abc" and line["status"] == 200
    assert line["time"].endswith("Z")


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
