"""
What the gateway can tell about its upstreams without relaying a request: `/health`, the
route and replica list, and the two model lists (`/api/models`, `/v1/models`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from gateway.routing.models_cache import ModelList
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.upstream.client import Upstream

__all__ = ["Catalogue"]


class Catalogue:
    def __init__(self, settings: Settings, router: Router, upstream: Upstream) -> None:
        self.settings = settings
        self.router = router
        self.upstream = upstream

    async def health(self) -> dict[str, Any]:
        """The gateway is up; `vllm` says whether any replica of the default route answers."""
        key = self.settings.health_route_key
        if key is None:
            return {"ok": True, "vllm": "unconfigured"}
        timeout = self.settings.health_timeout_seconds
        states = await asyncio.gather(*(self.upstream.probe(url, timeout) for url in self.router.routes[key].urls))
        for state in ("ok", "unknown"):
            if state in states:
                return {"ok": True, "vllm": state}
        return {"ok": True, "vllm": "unavailable"}

    def route_status(self) -> dict[str, Any]:
        """Every route and replica as this worker sees it."""
        return {
            "worker": os.getpid(),
            "routes": [
                {"key": route.key, "policy": route.policy.name, "replicas": [r.status() for r in route.replicas]}
                for route in self.router.routes.values()
            ],
        }

    async def _listings(self) -> Mapping[str, ModelList | None]:
        return await self.router.models.get_many(self.router.routes)

    async def api_models(self) -> dict[str, Any]:
        """Every route's models, de-duplicated by id, each with the routes that serve it."""
        merged: dict[str, dict[str, Any]] = {}
        for key, listing in (await self._listings()).items():
            if listing is None:
                continue  # a route that is down is left out, not an error
            for model in listing.models:
                model_id = str(model["id"])
                if not self.router.is_allowed(model_id):
                    continue
                entry = merged.setdefault(model_id, {"id": model_id, "object": "model", "sources": []})
                entry["sources"].append({"source": key, "latency_ms": listing.latency_ms})
        return {"object": "list", "data": list(merged.values())}

    async def openai_models(self) -> dict[str, Any]:
        """The OpenAI `/v1/models` list: each model once, as its first route describes it."""
        merged: dict[str, dict[str, Any]] = {}
        for listing in (await self._listings()).values():
            for model in listing.models if listing is not None else ():
                model_id = str(model["id"])
                if self.router.is_allowed(model_id):
                    merged.setdefault(model_id, model)
        return {"object": "list", "data": list(merged.values())}
