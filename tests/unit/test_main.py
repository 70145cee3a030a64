"""`python -m gateway`: the line an operator reads first."""

from __future__ import annotations

from gateway.__main__ import startup_line
from gateway.settings import Settings


def test_startup_line_says_where_it_listens_whether_keys_are_needed_and_where_docs_are() -> None:
    settings = Settings(api_keys=("a", "b"), workers=2, routes={"tiny": ("http://127.0.0.1:8000/v1",)})
    line = startup_line(settings)
    assert "listening on 0.0.0.0:5050 (all interfaces) with 2 workers" in line
    assert "API key required (2 configured" in line
    assert "docs at http://127.0.0.1:5050/docs" in line
    assert "routes: tiny (1 replica)" in line

    open_line = startup_line(Settings(api_host="::1", api_port=8080, workers=1))
    assert "listening on ::1:8080 with 1 worker;" in open_line
    assert "no API key required (API_KEY is empty)" in open_line
    assert "docs at http://[::1]:8080/docs" in open_line
    assert "routes: none (set MODEL_ROUTE_<KEY>)" in open_line
    assert "AUTH_REQUIRED=false" in startup_line(Settings(api_keys=("a",), auth_required=False))
