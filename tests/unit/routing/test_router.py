from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.errors import ModelNotAllowed, RoutingConflict, UnknownRouteKey, UpstreamUnavailable
from gateway.routing.models_cache import ModelList, ModelsCache
from gateway.routing.replicas import Route
from gateway.routing.router import Router
from gateway.settings import Settings


def listing(*ids: str) -> ModelList:
    return ModelList(models=tuple({"id": model_id, "object": "model"} for model_id in ids), latency_ms=3)


def router_for(settings: Settings, lists: dict[str, ModelList | None]) -> tuple[Router, list[str]]:
    calls: list[str] = []

    async def fetch(key: str) -> ModelList | None:
        calls.append(key)
        return lists.get(key)

    routes = {
        key: Route(key, urls, probe=_never_up, probe_interval=1, cooldown_max=1)
        for key, urls in settings.routes.items()
    }
    return Router(settings, routes, ModelsCache(fetch, ttl_seconds=60)), calls


async def _never_up(url: str) -> bool:
    return False


ROUTES = {"MODEL_ROUTE_a": "http://127.0.0.1:1/v1", "MODEL_ROUTE_b": "http://127.0.0.1:2/v1"}


async def test_explicit_key_without_a_model_asks_no_upstream(settings_from: Callable[..., Settings]) -> None:
    router, calls = router_for(settings_from(**ROUTES), {"a": listing("m1"), "b": listing("m2")})
    assert (await router.resolve("b", None)).key == "b"
    assert calls == []


async def test_explicit_key_must_serve_the_named_model(settings_from: Callable[..., Settings]) -> None:
    router, calls = router_for(settings_from(**ROUTES), {"a": listing("m1"), "b": listing("m2", "m2-lora")})
    assert (await router.resolve("b", "m2-lora")).key == "b"
    with pytest.raises(RoutingConflict, match="'m1' is not served by route 'b' \\(it serves: m2, m2-lora\\)") as caught:
        await router.resolve("b", "m1")
    assert caught.value.code == "model_not_served" and caught.value.status == 409
    assert calls == ["b"]  # one listing, cached


async def test_explicit_key_whose_route_cannot_be_listed_gets_the_request(
    settings_from: Callable[..., Settings],
) -> None:
    router, calls = router_for(settings_from(**ROUTES), {"a": listing("m1"), "b": None})
    assert (await router.resolve("b", "anything")).key == "b"  # the route itself answers for the model
    assert calls == ["b"]


async def test_unknown_key_is_404_naming_the_known_keys(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES), {})
    with pytest.raises(UnknownRouteKey, match="'c'.*a, b"):
        await router.resolve("c", None)


async def test_model_is_inferred_from_the_one_route_serving_it(settings_from: Callable[..., Settings]) -> None:
    router, calls = router_for(settings_from(**ROUTES), {"a": listing("m1"), "b": listing("m2")})
    assert (await router.resolve(None, "m2")).key == "b"
    assert (await router.resolve(None, "m1")).key == "a"
    assert sorted(calls) == ["a", "b"]  # cached: one listing per route


async def test_served_by_several_or_none_is_409(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES), {"a": listing("m"), "b": listing("m")})
    with pytest.raises(RoutingConflict, match="several routes"):
        await router.resolve(None, "m")
    with pytest.raises(RoutingConflict, match="no route serves model 'x'"):
        await router.resolve(None, "x")


async def test_one_route_down_is_named_in_the_409(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES), {"a": listing("m"), "b": None})
    with pytest.raises(RoutingConflict, match="unreachable: b"):
        await router.resolve(None, "x")
    assert (await router.resolve(None, "m")).key == "a"


async def test_all_routes_down_falls_back_to_the_default_route_or_502(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES, DEFAULT_MODEL_KEY="b"), {})
    assert (await router.resolve(None, "m")).key == "b"
    router, _ = router_for(settings_from(**ROUTES), {})
    with pytest.raises(UpstreamUnavailable):
        await router.resolve(None, "m")


async def test_no_model_uses_default_name_then_default_key(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES, DEFAULT_MODEL_NAME="m2"), {"a": listing("m1"), "b": listing("m2")})
    assert (await router.resolve(None, None)).key == "b"
    router, _ = router_for(settings_from(**ROUTES, DEFAULT_MODEL_KEY="a"), {})
    assert (await router.resolve(None, None)).key == "a"
    router, _ = router_for(settings_from(**ROUTES), {})
    with pytest.raises(RoutingConflict, match="DEFAULT_MODEL_KEY"):
        await router.resolve(None, None)


async def test_allowed_models_is_403_even_with_an_explicit_key(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(**ROUTES, ALLOWED_MODELS="m1"), {"a": listing("m1", "m2")})
    with pytest.raises(ModelNotAllowed, match="'m2'"):
        await router.resolve("a", "m2")
    assert (await router.resolve("a", "m1")).key == "a"


async def test_with_allowed_models_a_request_must_name_a_model(settings_from: Callable[..., Settings]) -> None:
    # Else the upstream would serve its own model, which the allowlist never saw.
    router, _ = router_for(settings_from(**ROUTES, ALLOWED_MODELS="m1", DEFAULT_MODEL_KEY="a"), {})
    with pytest.raises(ModelNotAllowed, match="must name one"):
        await router.resolve("a", None)
    with pytest.raises(ModelNotAllowed, match="must name one"):
        await router.resolve(None, None)
    router, _ = router_for(settings_from(**ROUTES, ALLOWED_MODELS="m1", DEFAULT_MODEL_NAME="m1"), {"a": listing("m1")})
    assert (await router.resolve("a", None)).key == "a"  # DEFAULT_MODEL_NAME names it


async def test_no_routes_at_all_is_502_saying_what_to_set(settings_from: Callable[..., Settings]) -> None:
    router, _ = router_for(settings_from(), {})
    with pytest.raises(UpstreamUnavailable, match="MODEL_ROUTE_"):
        await router.resolve(None, "m")
