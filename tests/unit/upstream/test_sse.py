from __future__ import annotations

import orjson

from gateway.errors import UpstreamTimeout
from gateway.upstream.sse import DONE, _complete_events, _ends_with_done, in_band_error, upstream_error_event


def test_only_whole_events_are_forwarded() -> None:
    assert _complete_events(b'data: {"a":1}\n\ndata: {"b"') == len(b'data: {"a":1}\n\n')
    assert _complete_events(b'data: {"a":1}\r\n\r\n') == len(b'data: {"a":1}\r\n\r\n')
    assert _complete_events(b'data: {"a":1}\n') == 0
    assert _complete_events(b"") == 0


def test_done_is_recognised_in_either_framing() -> None:
    assert _ends_with_done(b'data: {"a":1}\n\n' + DONE)
    assert _ends_with_done(b"data: [DONE]\r\n\r\n")
    assert not _ends_with_done(b'data: {"content":"data: [DONE]"}\n\n')


def test_in_band_error_is_an_error_event_then_done() -> None:
    event = in_band_error(UpstreamTimeout("slow"))
    head, data, rest = event.split(b"\n", 2)
    assert head == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: ")) == {
        "error": {"message": "slow", "type": "timeout_error", "code": "upstream_timeout"}
    }
    assert rest == b"\n" + DONE


def test_upstream_error_body_is_kept_when_it_is_an_error_envelope() -> None:
    vllm = b'{"error":{"message":"boom","type":"BadRequestError","param":null,"code":400}}'
    assert upstream_error_event(400, vllm, "tiny").startswith(b"event: error\ndata: " + vllm)
    other = upstream_error_event(503, b"<html>busy</html>", "tiny")
    error = orjson.loads(other.split(b"\n")[1].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_http_503" and "'tiny'" in error["message"]
