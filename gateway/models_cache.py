"""
The cache of each route's upstream `/models` list, used for routing by model and `/api/models`.

Two levels. Each worker keeps the lists it has seen until they expire, and concurrent misses
for one route share one fetch (single flight). With Redis, the lists live there too, under
`{REDIS_PREFIX}models:{route}`, with a short lock so that one worker of one instance fetches
while the others wait for its result: every worker and every instance makes at most one
upstream `/models` call per route per TTL. Local copies expire with the Redis entry they were
read from. If Redis fails, the worker carries on with its local cache alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .redis_store import RedisStore, StoreUnavailable

__all__ = ["ModelList", "ModelsCache", "merge_listings"]

# A route that could not be listed is asked again after this long (or the TTL, if shorter).
FAILURE_TTL_SECONDS = 1.0
# How long a worker that lost the Redis fetch lock waits for the winner's result.
LOCK_WAIT_SECONDS = 3.0
LOCK_POLL_SECONDS = 0.02


class ModelList:
    """One route's models as its upstream listed them, and how long the listing took."""

    __slots__ = ("ids", "latency_ms", "models")

    def __init__(self, models: tuple[dict[str, Any], ...], latency_ms: int) -> None:
        self.models = models
        self.latency_ms = latency_ms
        # Routing asks "is model X here?" on every request: a set, built once per listing.
        self.ids = frozenset(str(model.get("id")) for model in models)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelList) and (self.models, self.latency_ms) == (other.models, other.latency_ms)

    def __repr__(self) -> str:
        return f"ModelList(ids={sorted(self.ids)!r}, latency_ms={self.latency_ms})"

    def to_json(self) -> bytes:
        return orjson.dumps({"models": self.models, "latency_ms": self.latency_ms})

    @classmethod
    def from_json(cls, data: bytes) -> ModelList:
        value = orjson.loads(data)
        return cls(models=tuple(value["models"]), latency_ms=int(value["latency_ms"]))


def merge_listings(listings: Iterable[ModelList | None]) -> ModelList | None:
    """The union of several replicas' listings (None if none answered), with the best latency."""
    answered = [listing for listing in listings if listing is not None]
    if not answered:
        return None
    models: dict[str, dict[str, Any]] = {}
    for listing in answered:
        for model in listing.models:
            models.setdefault(str(model.get("id")), model)
    return ModelList(models=tuple(models.values()), latency_ms=min(listing.latency_ms for listing in answered))


@dataclass(slots=True)
class _Entry:
    value: ModelList | None  # None: the route could not be listed
    expires_at: float


Fetch = Callable[[str], Awaitable[ModelList | None]]


class ModelsCache:
    """`get(route)` returns the route's `ModelList`, or None if it could not be listed."""

    def __init__(self, fetch: Fetch, ttl_seconds: float, store: RedisStore | None = None) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._store = store
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}

    async def get(self, route_key: str) -> ModelList | None:
        return (await self._entry(route_key)).value

    async def ids(self, route_key: str) -> frozenset[str] | None:
        """The route's model ids, or None if it could not be listed."""
        value = (await self._entry(route_key)).value
        return value.ids if value is not None else None

    async def get_many(self, route_keys: Iterable[str]) -> dict[str, ModelList | None]:
        """Several routes' listings, fetched concurrently where they are not cached."""
        now = time.monotonic()
        keys = list(route_keys)
        found: dict[str, ModelList | None] = {}
        missing: list[str] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at > now:
                found[key] = entry.value
            else:
                missing.append(key)
        if missing:  # only misses cost tasks; the common case, all cached, costs none
            entries = await asyncio.gather(*(self._entry(key) for key in missing))
            found.update((key, entry.value) for key, entry in zip(missing, entries, strict=True))
            found = {key: found[key] for key in keys}  # in the routes' order
        return found

    async def _entry(self, route_key: str) -> _Entry:
        entry = self._entries.get(route_key)
        if entry is not None and entry.expires_at > time.monotonic():
            return entry
        inflight = self._inflight.get(route_key)
        if inflight is None:
            inflight = asyncio.get_running_loop().create_future()
            self._inflight[route_key] = inflight
            try:
                entry = await self._load(route_key)
            except BaseException as exc:
                inflight.set_exception(exc)
                inflight.exception()  # mark retrieved: waiters may be gone
                raise
            else:
                inflight.set_result(entry)
            finally:
                del self._inflight[route_key]
            self._entries[route_key] = entry
            return entry
        # shield: one waiter's cancellation must not cancel the shared fetch.
        return await asyncio.shield(inflight)

    async def _load(self, route_key: str) -> _Entry:
        if self._store is not None:
            try:
                return await self._load_shared(self._store, route_key)
            except StoreUnavailable:
                pass
        return self._make_entry(await self._fetch(route_key), self._ttl)

    def _make_entry(self, value: ModelList | None, ttl: float) -> _Entry:
        if value is None:
            ttl = min(ttl, FAILURE_TTL_SECONDS)
        return _Entry(value=value, expires_at=time.monotonic() + ttl)

    async def _load_shared(self, store: RedisStore, route_key: str) -> _Entry:
        key = store.key("models", route_key)
        lock = store.key("models", route_key, "lock")
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        won = False
        while True:
            cached = await store.run("models cache", lambda r: _get_with_ttl(r, key))
            if cached is not None:
                if won:
                    await store.run("models cache", lambda r: r.delete(lock))
                data, ttl_ms = cached
                return self._make_entry(ModelList.from_json(data), max(ttl_ms, 1) / 1000)
            if won or time.monotonic() >= deadline:
                break
            won = bool(
                await store.run("models cache", lambda r: r.set(lock, b"1", nx=True, px=int(LOCK_WAIT_SECONDS * 1000)))
            )
            # A lock won is checked once more before fetching: the previous holder may have
            # stored its listing and let go between our read and our lock.
            if not won:
                await asyncio.sleep(LOCK_POLL_SECONDS)

        value = await self._fetch(route_key)
        try:
            if value is not None:
                await store.run("models cache", lambda r: r.set(key, value.to_json(), px=max(int(self._ttl * 1000), 1)))
            await store.run("models cache", lambda r: r.delete(lock))
        except StoreUnavailable:
            pass
        return self._make_entry(value, self._ttl)


async def _get_with_ttl(client: Any, key: str) -> tuple[bytes, int] | None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.pttl(key)
        data, ttl_ms = await pipe.execute()
    if data is None or ttl_ms is None or ttl_ms <= 0:
        return None
    return data, int(ttl_ms)
