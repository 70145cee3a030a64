"""gateway/api/catalogue.py: /health, the route list and the two model lists, over fake upstreams."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from gateway.services import Services
from gateway.settings import Settings
from tests.conftest import worker_services

A, B = "http://127.0.0.1:9101/v1", "http://127.0.0.1:9102/v1"
LISTINGS = {
    A: [{"id": "chat-model", "object": "model", "owned_by": "vllm"}, {"id": "shared", "object": "model"}],
    B: [{"id": "shared", "object": "model", "owned_by": "second"}, {"id": "hidden", "object": "model"}],
}


def services(settings: Settings, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> Services:
    def listing(request: httpx.Request) -> httpx.Response:
        base = str(request.url).removesuffix("/models")
        return httpx.Response(200, json={"object": "list", "data": LISTINGS[base]})

    return worker_services(settings, httpx.MockTransport(answer or listing))


async def test_the_api_list_names_every_route_serving_a_model(settings_from: Callable[..., Settings]) -> None:
    built = services(settings_from(MODEL_ROUTE_a=A, MODEL_ROUTE_b=B))
    listed = await built.catalogue.api_models()
    sources = {model["id"]: [source["source"] for source in model["sources"]] for model in listed["data"]}
    assert sources == {"chat-model": ["a"], "shared": ["a", "b"], "hidden": ["b"]}
    await built.aclose()


async def test_the_openai_list_has_each_model_once_as_its_first_route_describes_it(
    settings_from: Callable[..., Settings],
) -> None:
    built = services(settings_from(MODEL_ROUTE_a=A, MODEL_ROUTE_b=B, ALLOWED_MODELS="chat-model,shared"))
    listed = await built.catalogue.openai_models()
    assert listed["object"] == "list"
    assert listed["data"] == LISTINGS[A]  # "hidden" is not allowed; "shared" as route a says
    await built.aclose()


async def test_a_route_that_is_down_is_left_out_of_the_lists(settings_from: Callable[..., Settings]) -> None:
    def only_a(request: httpx.Request) -> httpx.Response:
        if str(request.url).startswith(B):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"data": LISTINGS[A]})

    built = services(settings_from(MODEL_ROUTE_a=A, MODEL_ROUTE_b=B), only_a)
    assert [model["id"] for model in (await built.catalogue.api_models())["data"]] == ["chat-model", "shared"]
    await built.aclose()


async def test_health_says_what_the_default_route_answers(settings_from: Callable[..., Settings]) -> None:
    for status, expected in ((200, "ok"), (404, "unknown"), (503, "unavailable")):

        def answer(request: httpx.Request, status: int = status) -> httpx.Response:
            return httpx.Response(status)

        built = services(settings_from(MODEL_ROUTE_a=A), answer)
        assert await built.catalogue.health() == {"ok": True, "vllm": expected}
        await built.aclose()
    unconfigured = services(settings_from())
    assert await unconfigured.catalogue.health() == {"ok": True, "vllm": "unconfigured"}


async def test_the_route_list_shows_every_replica(settings_from: Callable[..., Settings]) -> None:
    built = services(settings_from(MODEL_ROUTE_a=f"{A},{B}"))
    (route,) = built.catalogue.route_status()["routes"]
    assert route["key"] == "a" and [replica["url"] for replica in route["replicas"]] == [A, B]
    await built.aclose()
