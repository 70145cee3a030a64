"""
`/docs/openapi.json` describes what a live gateway answers: schemathesis runs against it.

A real `python -m gateway` (two workers, an API key, rate limiting on so that its headers are
checked) in front of two fake vLLMs (`scripts/fake_vllm.py`): a chat route and an embeddings
route, which also share a model (so that ambiguous routing is reached too). schemathesis (the
`st` command of this virtualenv) reads the document from the gateway, generates requests for
every operation from it (a fixed seed and a bounded number of examples), and checks every answer:

- `not_a_server_error`: with the upstreams up, no 5xx (bad input gets a 4xx, never a traceback);
- `status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`: status, media type, headers and body are the documented ones
  (an event stream is validated event by event);
- `ignored_auth`: without the key, every operation that needs one answers 401.

The run's HAR file shows that every operation was answered with a 2xx at least once, so that the
success schemas were checked, not only the errors. A second run, against a copy of the document
with one schema made false, shows that a mismatch fails.

Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.procs import FakeVLLM, Gateway

ST = Path(sys.executable).with_name("st")
API_KEY = "conformance-key"
SEED = 17
MAX_EXAMPLES = 20  # per operation and phase: about 800 requests, a few seconds
RUN_TIMEOUT_SECONDS = 60.0
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
)
STREAMING = {("POST", "/api/chat/stream"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")}

pytestmark = pytest.mark.skipif(not ST.exists(), reason="schemathesis is not installed (requirements-dev.txt)")


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], chat_upstream: FakeVLLM, embed_upstream: FakeVLLM) -> Gateway:
    return start_gateway(
        workers=2,
        MODEL_ROUTE_tiny=chat_upstream.url,
        MODEL_ROUTE_embed=embed_upstream.url,
        DEFAULT_MODEL_KEY="tiny",
        API_KEY=API_KEY,
        RATE_LIMIT_PER_MIN="1000000",  # on, for its headers; never reached
    )


def run_schemathesis(
    schema: str, base_url: str, workdir: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`st run` on `schema` (a URL or a file) against `base_url`, from `workdir` (no config file, no database)."""
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    argv = [
        str(ST),
        "run",
        schema,
        "--url",
        base_url,
        "--header",
        f"X-API-Key: {API_KEY}",
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--request-timeout",
        "5",
        # Hypothesis's timing of data generation: a loaded machine must not fail the run.
        "--suppress-health-check",
        "too_slow",
        "--no-color",
        *args,
    ]
    started = time.monotonic()
    completed = subprocess.run(
        argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    return completed, time.monotonic() - started


def statuses_by_operation(har: Path, base_url: str) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """(method, path) -> the (status, content type) of each answer recorded in a HAR file."""
    answers: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for entry in orjson.loads(har.read_bytes())["log"]["entries"]:
        url = entry["request"]["url"].removeprefix(base_url).split("?", 1)[0]
        content_type = next(
            (h["value"] for h in entry["response"]["headers"] if h["name"].lower() == "content-type"), ""
        )
        answers[(entry["request"]["method"], url)].append((entry["response"]["status"], content_type))
    return answers


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_the_live_gateway_answers_as_its_document_says(gateway: Gateway) -> None:
    document = httpx.get(f"{gateway.url}/docs/openapi.json", timeout=5).json()
    operations = documented_operations(document)
    assert len(operations) >= 11
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as tmp:
        har = Path(tmp) / "run.har"
        completed, seconds = run_schemathesis(
            f"{gateway.url}/docs/openapi.json",
            gateway.url,
            Path(tmp),
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--report",
            "har",
            "--report-har-path",
            str(har),
        )
        report = f"st exited with {completed.returncode} after {seconds:.1f} s:\n{completed.stdout[-12000:]}\n{completed.stderr[-3000:]}"
        assert completed.returncode == 0, report
        assert f"Selected: {len(operations)}/{len(operations)}" in completed.stdout, report
        answers = statuses_by_operation(har, gateway.url)
    tested = {operation: answers.get(operation, []) for operation in operations}
    # Every operation was answered with success at least once, so its success schema was checked;
    # a stream was answered as one.
    for operation, seen in tested.items():
        assert any(200 <= status < 300 for status, _ in seen), (operation, sorted(set(seen)))
        if operation in STREAMING:
            assert any(status == 200 and ctype.startswith("text/event-stream") for status, ctype in seen), operation
    assert not any(status >= 500 for seen in answers.values() for status, _ in seen)
    assert "Traceback" not in gateway.output()


def test_a_false_document_fails_the_run(gateway: Gateway) -> None:
    # The check has teeth: the same run, against a copy of the live document in which one field
    # the gateway sends as null (a replica's last_error before any failure) is declared non-null.
    document = httpx.get(f"{gateway.url}/docs/openapi.json", timeout=5).json()
    del document["components"]["schemas"]["ReplicaStatus"]["properties"]["last_error"]["nullable"]
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as tmp:
        schema = Path(tmp) / "openapi.json"
        schema.write_bytes(orjson.dumps(document))
        completed, _ = run_schemathesis(
            str(schema),
            gateway.url,
            Path(tmp),
            "--checks",
            "response_schema_conformance",
            "--max-examples",
            "2",
            "--include-path",
            "/api/routes",
        )
    assert completed.returncode != 0, completed.stdout[-5000:]
    assert "ST108" in completed.stdout and "last_error" in completed.stdout, completed.stdout[-5000:]
