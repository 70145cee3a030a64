"""
`Services`: what a worker builds once at start-up and every request uses — the upstream
client, Redis, the routes and their replicas, the models cache, the guard (keys and limits),
the proxy and the catalogue. Blueprints reach them as `request.app.ctx.services`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.admission.client_ip import ClientIP, parse_networks
from gateway.admission.guard import Guard
from gateway.admission.ratelimit import Limiter, LocalLimiter, RedisLimiter, SharedMemoryLimiter
from gateway.api.catalogue import Catalogue
from gateway.api.proxy import Proxy
from gateway.observability.metrics import metrics
from gateway.process.server import StopSignals
from gateway.routing.engine_metrics import STALE_AFTER_INTERVALS, EngineMetricsReader
from gateway.routing.models_cache import ModelList, ModelsCache, merge_listings
from gateway.routing.policies import LeastOutstanding, Policy, SessionAffinity
from gateway.routing.prefix_affinity import PrefixAffinity
from gateway.routing.prefix_sharing import PrefixSharing
from gateway.routing.replicas import Route
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.shared import ejections, engine_load, prefix_index
from gateway.shared.prefix_index import PrefixIndex
from gateway.shared.redis_store import RedisStore, connect_redis
from gateway.upstream.base import Transport
from gateway.upstream.client import Upstream

__all__ = ["Services"]

logger = logging.getLogger("gateway")


@dataclass(slots=True, eq=False)
class Services:
    settings: Settings
    upstream: Upstream
    redis: RedisStore | None
    routes: dict[str, Route]
    models: ModelsCache
    guard: Guard
    proxy: Proxy
    catalogue: Catalogue
    engine_metrics: EngineMetricsReader | None = None
    prefix_sharing: PrefixSharing | None = None
    # Set once the worker serves, and when it begins to stop.
    stop_signals: StopSignals | None = None
    stream_deadline: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        shared_ctx: Any,
        local_limiter: LocalLimiter | None,
        transport: Transport | httpx.AsyncBaseTransport | None = None,
    ) -> Services:
        """`shared_ctx`: Sanic's, holding the main process's tables (empty in a single process)."""
        upstream = Upstream(settings, transport=transport)
        store = _redis_store(settings) if settings.use_redis else None
        shared_cells = _shared_replica_cells(shared_ctx, settings)
        interval = settings.engine_metrics_interval_seconds
        engine_table, engine_cells = _shared_engine_cells(shared_ctx, settings)
        policies, prefix_sharing = _policies(settings, shared_ctx, store)
        routes = {
            key: Route(
                key,
                urls,
                probe=upstream.is_up,
                probe_interval=settings.replica_probe_interval_seconds,
                cooldown_max=settings.replica_cooldown_max_seconds,
                probe_timeout=settings.health_timeout_seconds,
                cells=shared_cells.get(key),
                policy=policies[key],
                engine_cells=engine_cells.get(key),
                engine_stale_after=STALE_AFTER_INTERVALS * interval,
            )
            for key, urls in settings.routes.items()
        }
        engine_metrics = None
        if interval:
            every_replica = [replica for route in routes.values() for replica in route.replicas]
            engine_metrics = EngineMetricsReader(every_replica, upstream, interval, engine_table)
            engine_metrics.start()

        async def list_route(route_key: str) -> ModelList | None:
            route = routes[route_key]
            urls = [replica.url for replica in route.healthy()] or list(route.urls)
            return merge_listings(await asyncio.gather(*(upstream.list_models(url) for url in urls)))

        models = ModelsCache(list_route, settings.models_cache_ttl_seconds, store)
        router = Router(settings, routes, models)
        return cls(
            settings=settings,
            upstream=upstream,
            redis=store,
            routes=routes,
            models=models,
            guard=Guard(
                settings,
                _limiter(settings, shared_ctx, local_limiter, store),
                ClientIP(parse_networks(settings.trusted_proxies)),
            ),
            proxy=Proxy(settings, router, upstream),
            catalogue=Catalogue(settings, router, upstream),
            engine_metrics=engine_metrics,
            prefix_sharing=prefix_sharing,
        )

    async def aclose(self) -> None:
        """After the server stopped: in-flight handlers have finished or been cancelled."""
        if self.stream_deadline is not None:
            self.stream_deadline.cancel()
        if self.engine_metrics is not None:
            self.engine_metrics.close()
        if self.prefix_sharing is not None:
            self.prefix_sharing.close()
        for route in self.routes.values():
            route.close()
        self.models.close()
        await self.upstream.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def _limiter(
    settings: Settings, shared_ctx: Any, local_limiter: LocalLimiter | None, store: RedisStore | None
) -> Limiter | None:
    """Redis's budget when there is Redis, falling back to the machine's shared-memory table."""
    limit = settings.rate_limit_per_min
    if not limit:
        return None
    table = getattr(shared_ctx, "rate_table", None)
    local = SharedMemoryLimiter(limit, table) if table is not None else local_limiter
    assert local is not None, "create_app() builds a local limiter whenever there is a limit"
    return RedisLimiter(limit, store, local) if store is not None else local


def _policies(
    settings: Settings, shared_ctx: Any, store: RedisStore | None
) -> tuple[dict[str, Policy], PrefixSharing | None]:
    """Each route's policy (each has its own state); the prefix index and its sharing, if any uses them."""
    names = {key: settings.routing_policy(key) for key in settings.routes}
    sharing, index, bits = None, None, {}
    if "prefix" in names.values():
        table = getattr(shared_ctx, "prefix_index", None)
        index = PrefixIndex(table, settings.routes, settings.prefix_index_ttl_seconds)
        if table is not None and index.shared is None:
            logger.warning("this worker's routes differ from the main process's: it keeps its own prefix index")
        bits = prefix_index.replica_bits(settings.routes)
        if store is not None:
            sharing = PrefixSharing(store, index, bits, index.shared)
            sharing.start()
        metrics.prefix_index_shared.set(0)  # until a flush or a read has reached Redis
    policies: dict[str, Policy] = {}
    for key, name in names.items():
        if name == "prefix":
            assert index is not None
            policies[key] = PrefixAffinity(key, index, bits, settings.prefix_load_margin, sharing)
        else:
            policies[key] = SessionAffinity() if name == "session" else LeastOutstanding()
    return policies, sharing


def _shared_replica_cells(shared_ctx: Any, settings: Settings) -> dict[str, list[Any]]:
    """The replicas' cells in the machine's ejection table; none in a single process (tests)."""
    table = getattr(shared_ctx, "ejections", None)
    if table is None:
        return {}
    cells = ejections.replica_cells(table, settings.routes)
    if cells is None:
        logger.warning("this worker's routes differ from the main process's: it keeps its own view of replica health")
        return {}
    return cells


def _shared_engine_cells(shared_ctx: Any, settings: Settings) -> tuple[Any | None, dict[str, list[Any]]]:
    """The machine's engine-load table and the replicas' cells in it; none in a single process."""
    table = getattr(shared_ctx, "engine_load", None)
    cells = engine_load.replica_cells(table, settings.routes) if table is not None else None
    if cells is None:
        return None, {}  # this worker reads the engines' metrics for itself
    return table, cells


def _redis_store(settings: Settings) -> RedisStore:
    return RedisStore(
        connect_redis(
            settings.redis_url,
            cluster=settings.redis_cluster,
            sentinels=settings.redis_sentinels,
            sentinel_master=settings.redis_sentinel_master,
        ),
        settings.redis_prefix,
        on_fallback=lambda purpose: metrics.redis_fallbacks.labels(purpose).inc(),
        on_error=lambda purpose: metrics.redis_errors.labels(purpose).inc(),
    )
