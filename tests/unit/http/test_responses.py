from __future__ import annotations

from sanic import HTTPResponse

from gateway.http.responses import Response, safe_header_text


def test_headers_go_out_as_sanics_own_responses_send_them() -> None:
    headers = {"x-request-id": "abc-123", "x-ratelimit-remaining": 7, "access-control-allow-origin": "*"}
    ours = Response(b"{}", status=201, headers=headers, content_type="application/json")
    sanics = HTTPResponse(b"{}", status=201, headers=headers, content_type="application/json")
    assert list(ours.processed_headers) == list(sanics.processed_headers)


def test_header_values_cannot_inject_lines() -> None:
    response = Response(b"", headers={"x-note": "a\r\nset-cookie: evil=1\x00"})
    sent = dict(response.processed_headers)
    assert sent[b"x-note"] == b"aset-cookie: evil=1"
    assert list(response.processed_headers) == list(
        HTTPResponse(b"", headers={"x-note": "a\r\nset-cookie: evil=1\x00"}).processed_headers
    )
    assert safe_header_text("plain value") == "plain value"
    assert safe_header_text("\n\r\x00") == ""


def test_headerless_statuses_get_no_content_type() -> None:
    assert b"content-type" not in dict(Response(status=204).processed_headers)
