"""
Which route serves a request.

A route is a key (`MODEL_ROUTE_<KEY>`) and the base URLs of its replicas. The decision, in order:

1. `model` missing: `DEFAULT_MODEL_NAME` stands in for it.
2. `model` outside `ALLOWED_MODELS`: 403; so is no model at all when `ALLOWED_MODELS` is set
   (the upstream would pick one, unchecked).
3. `modelKey` (body) or `X-Model-Key` given: that route, or 404 if there is none; 409 if the
   request names a model that the route's cached `/models` list does not hold (a route that
   cannot be listed gets the request, and answers for it).
4. No model at all: `DEFAULT_MODEL_KEY` (or the only route), else 409.
5. Otherwise the route is inferred from the cached upstream `/models` lists: exactly one route
   serves the model: that one; several: 409; none: 409, unless no route could be listed at
   all, in which case the default route is tried (and its failure reported as such).

The 409s are `/api`'s; on `/v1` the same errors read as OpenAI's (see `errors.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import (
    AmbiguousModel,
    ModelNotAllowed,
    ModelNotServed,
    ModelRequired,
    NoUpstreamConfigured,
    UnknownRouteKey,
    UpstreamUnavailable,
)
from gateway.routing.models_cache import ModelsCache
from gateway.routing.replicas import Route
from gateway.settings import Settings

__all__ = ["Router"]


class Router:
    def __init__(self, settings: Settings, routes: Mapping[str, Route], models: ModelsCache) -> None:
        self.routes = routes
        self.models = models
        self._allowed = settings.allowed_models
        self._default_model = settings.default_model_name
        fallback = settings.fallback_route_key
        self._fallback = self.routes[fallback] if fallback is not None else None

    def is_allowed(self, model: str) -> bool:
        return self._allowed is None or model in self._allowed

    async def resolve(self, model_key: str | None, model: str | None) -> Route:
        """The route for a request naming `model_key` and/or `model` (either may be None)."""
        named = model
        model = model or self._default_model
        if model is None:
            if self._allowed is not None:
                raise ModelNotAllowed(
                    "this gateway serves only ALLOWED_MODELS: the request must name one in 'model'", param="model"
                )
        elif not self.is_allowed(model):
            raise ModelNotAllowed(f"model {model!r} is not in this gateway's ALLOWED_MODELS", param="model")
        if model_key is not None:
            route = self.routes.get(model_key)
            if route is None:
                known = ", ".join(self.routes) or "none"
                raise UnknownRouteKey(f"unknown modelKey {model_key!r}; configured keys: {known}")
            if named is not None:
                await self._check_serves(route, named)
            return route
        if not self.routes:
            raise NoUpstreamConfigured("no upstream is configured: set MODEL_ROUTE_<KEY> or VLLM_BASE_URL")
        if model is None:
            if self._fallback is None:
                raise ModelRequired("no model and no modelKey given, and no DEFAULT_MODEL_KEY to fall back on")
            return self._fallback
        return await self._infer(model)

    async def _check_serves(self, route: Route, model: str) -> None:
        listing = (await self.models.get_many([route.key]))[route.key]
        if listing is not None and model not in listing.ids:
            served = ", ".join(sorted(listing.ids)) or "none"
            raise ModelNotServed(f"model {model!r} is not served by route {route.key!r} (it serves: {served})")

    async def _infer(self, model: str) -> Route:
        lists = await self.models.get_many(self.routes)
        serving = [key for key, found in lists.items() if found is not None and model in found.ids]
        if len(serving) == 1:
            return self.routes[serving[0]]
        if serving:
            raise AmbiguousModel(
                f"model {model!r} is served by several routes ({', '.join(serving)}); choose one with modelKey"
            )
        unreachable = [key for key, found in lists.items() if found is None]
        if len(unreachable) == len(lists):
            if self._fallback is not None:
                return self._fallback
            raise UpstreamUnavailable(
                f"cannot route model {model!r}: no route answered its /models listing ({', '.join(unreachable)})"
            )
        detail = f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
        raise ModelNotServed(f"no route serves model {model!r}{detail}")
