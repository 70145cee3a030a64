"""Embeddings through the gateway equal vLLM's own."""

from __future__ import annotations

import pytest

from tests.e2e.vllm import (
    EMBED_DIMS,
    FOX,
    PETS,
    VLLM_EMBEDDINGS,
    Body,
    Headers,
    both,
    normalised,
    vectors,
)
from tests.procs import Gateway

from .conftest import EMBED_MODEL

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        pytest.param("/api/embeddings", {"input": FOX, "model": EMBED_MODEL}, None, id="api-inferred"),
        pytest.param("/api/embeddings", {"input": PETS, "modelKey": "embed"}, None, id="api-modelKey-batch"),
        pytest.param("/v1/embeddings", {"input": FOX, "model": EMBED_MODEL}, None, id="v1-floats"),
        pytest.param(
            "/v1/embeddings",
            {"input": PETS, "model": EMBED_MODEL, "encoding_format": "base64"},
            {"X-Model-Key": "embed"},
            id="v1-base64-header-key",
        ),
    ],
)
def test_embeddings_equal_direct(gateway: Gateway, path: str, body: Body, headers: Headers | None) -> None:
    direct_body = {key: value for key, value in body.items() if key != "modelKey"}
    direct_body.setdefault("model", EMBED_MODEL)
    direct, through = both(gateway, path, VLLM_EMBEDDINGS, body, direct_body, headers)
    assert direct.status_code == 200, direct.text
    assert through.status_code == 200, through.text
    assert normalised(through.content) == normalised(direct.content)
    got, expected = vectors(through.json()), vectors(direct.json())
    assert len(got) == (len(body["input"]) if isinstance(body["input"], list) else 1)
    assert all(len(vector) == EMBED_DIMS for vector in got)
    assert got == expected
    if body.get("encoding_format") == "base64":
        assert all(isinstance(item["embedding"], str) for item in through.json()["data"])
