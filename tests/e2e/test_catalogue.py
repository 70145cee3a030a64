"""The model lists and health, as the gateway builds them from both real vLLM servers."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.vllm import (
    TIMEOUT,
    Body,
)
from tests.procs import Gateway

from .conftest import CHAT_MODEL, CHAT_URL, EMBED_MODEL, EMBED_URL

pytestmark = pytest.mark.e2e


def test_health_reports_vllm_ok(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/health", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "vllm": "ok"}


def test_api_models_aggregates_both_servers(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/api/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    by_id = {entry["id"]: entry for entry in body["data"]}
    assert set(by_id) == {CHAT_MODEL, EMBED_MODEL}
    assert len(body["data"]) == 2, "models must be de-duplicated by id"
    for model, key in ((CHAT_MODEL, "tiny"), (EMBED_MODEL, "embed")):
        entry = by_id[model]
        assert entry["object"] == "model"
        assert [source["source"] for source in entry["sources"]] == [key]
        latency = entry["sources"][0]["latency_ms"]
        assert isinstance(latency, int) and not isinstance(latency, bool) and latency >= 0, entry


def _stable_model_card(card: Body) -> Body:
    # vLLM stamps `created` and a fresh permission id on every /v1/models answer.
    card = {key: value for key, value in card.items() if key != "created"}
    card["permission"] = [
        {key: value for key, value in perm.items() if key not in ("id", "created")}
        for perm in card.get("permission", [])
    ]
    return card


def test_v1_models_is_the_union_of_both_servers(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    direct = httpx.get(f"{CHAT_URL}/models", timeout=TIMEOUT).json()["data"]
    direct += httpx.get(f"{EMBED_URL}/models", timeout=TIMEOUT).json()["data"]
    expected = {card["id"]: _stable_model_card(card) for card in direct}
    got = {card["id"]: _stable_model_card(card) for card in body["data"]}
    assert len(body["data"]) == len(got) == 2
    assert got == expected
