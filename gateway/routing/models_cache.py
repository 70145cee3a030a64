"""
The cache of each route's upstream `/models` list, used for routing by model and `/api/models`.

Two levels. Each worker keeps the lists it has seen until they expire, and concurrent misses
for one route share one fetch (single flight). With Redis, the lists live there too, under
`{REDIS_PREFIX}models:{<route>}` (hash-tagged, so that in a cluster its lock shares its slot),
with a short lock so that one worker of one instance fetches while the others wait for its
result: all workers of all instances make about one upstream `/models` call per route per TTL.
Local copies expire with the Redis entry they were read from.
If Redis fails, the worker carries on with its local cache alone.

Refresh ahead: a list read in the last tenth of its lifetime is fetched again in the background
while it is still served, so that as long as requests keep coming, none waits for `/models`
(every 10 s, each worker's requests that route by model used to wait for an upstream round trip,
which a busy vLLM answers slowly). No list is ever used past its TTL: when no request came in
that last tenth, the next one waits for the fetch, as on a miss.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.shared.redis_store import RedisStore, StoreUnavailable

__all__ = ["ModelList", "ModelsCache", "merge_listings"]

# A route that could not be listed is asked again after this long (or the TTL, if shorter).
FAILURE_TTL_SECONDS = 1.0
# The last part of a list's lifetime in which reading it starts a refresh in the background.
REFRESH_AHEAD_FRACTION = 0.1
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
    refresh_at: float  # from then on a read starts a refresh in the background (monotonic)


Fetch = Callable[[str], Awaitable[ModelList | None]]


class ModelsCache:
    """`get(route)` returns the route's `ModelList`, or None if it could not be listed."""

    def __init__(self, fetch: Fetch, ttl_seconds: float, store: RedisStore | None = None) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._store = store
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._refresh_margin = ttl_seconds * REFRESH_AHEAD_FRACTION
        self._refreshes: set[asyncio.Task[_Entry]] = set()

    def close(self) -> None:
        """Cancel the refreshes running in the background (the worker is stopping)."""
        for task in list(self._refreshes):
            task.cancel()

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
            entry = self._cached(key, now)
            if entry is not None:
                found[key] = entry.value
            else:
                missing.append(key)
        if missing:  # only misses cost tasks; the common case, all cached, costs none
            entries = await asyncio.gather(*(self._entry(key) for key in missing))
            found.update((key, entry.value) for key, entry in zip(missing, entries, strict=True))
            found = {key: found[key] for key in keys}  # in the routes' order
        return found

    def _cached(self, route_key: str, now: float) -> _Entry | None:
        """The route's entry while it is valid; read in its last tenth, it starts a refresh."""
        entry = self._entries.get(route_key)
        if entry is None or entry.expires_at <= now:
            return None
        if now >= entry.refresh_at:
            self._refresh_ahead(route_key, entry)
        return entry

    async def _entry(self, route_key: str) -> _Entry:
        entry = self._cached(route_key, time.monotonic())
        if entry is not None:
            return entry
        inflight = self._inflight.get(route_key)
        if inflight is None:
            return await self._load_once(route_key, self._new_flight(route_key), self._load(route_key))
        # shield: one waiter's cancellation must not cancel the shared fetch.
        entry = await asyncio.shield(inflight)
        if entry.expires_at <= time.monotonic():  # a refresh ahead that kept the list it had
            return await self._entry(route_key)
        return entry

    def _new_flight(self, route_key: str) -> asyncio.Future[_Entry]:
        """The future that later misses of `route_key` wait on, registered at once."""
        inflight = self._inflight[route_key] = asyncio.get_running_loop().create_future()
        return inflight

    async def _load_once(
        self, route_key: str, inflight: asyncio.Future[_Entry], loading: Coroutine[Any, Any, _Entry]
    ) -> _Entry:
        try:
            entry = await loading
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

    def _refresh_ahead(self, route_key: str, current: _Entry) -> None:
        """Fetch `route_key`'s list again in the background; `current` stays in use meanwhile."""
        if route_key in self._inflight:
            return  # a fetch is on its way already
        flight = self._new_flight(route_key)
        task = asyncio.ensure_future(self._load_once(route_key, flight, self._refresh(route_key, current)))
        self._refreshes.add(task)
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[_Entry]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the waiters, if any, got it through the flight's future

    async def _load(self, route_key: str) -> _Entry:
        if self._store is not None:
            try:
                return await self._load_shared(self._store, route_key)
            except StoreUnavailable:
                pass
        return self._make_entry(await self._fetch(route_key), self._ttl)

    async def _refresh(self, route_key: str, current: _Entry) -> _Entry:
        if self._store is not None:
            try:
                return await self._refresh_shared(self._store, route_key, current)
            except StoreUnavailable:
                pass
        return self._refreshed(current, await self._fetch(route_key))

    def _refreshed(self, current: _Entry, value: ModelList | None) -> _Entry:
        """The entry after a refresh that fetched `value`. A failed refresh leaves the list in
        use until it expires; the next request after that fetches it again, as on a miss."""
        if value is None:
            current.refresh_at = current.expires_at
            return current
        return self._make_entry(value, self._ttl)

    def _make_entry(self, value: ModelList | None, ttl: float) -> _Entry:
        expires_at = time.monotonic() + (ttl if value is not None else min(ttl, FAILURE_TTL_SECONDS))
        # A route that could not be listed is not refreshed ahead: the next request after its
        # short retry delay asks again.
        refresh_at = expires_at - self._refresh_margin if value is not None else expires_at
        return _Entry(value=value, expires_at=expires_at, refresh_at=refresh_at)

    async def _refresh_shared(self, store: RedisStore, route_key: str, current: _Entry) -> _Entry:
        """A refresh ahead with Redis: take a list another worker or instance stored since,
        else fetch and store one if this worker gets the lock, else keep the current one (the
        lock's holder is fetching it; a later read takes it from Redis)."""
        key = store.key("models", route_key)
        lock = store.key("models", route_key, "lock")
        cached = await store.run("models cache", lambda r: _get_with_ttl(r, key))
        if cached is not None and cached[1] > self._refresh_margin * 1000:
            data, ttl_ms = cached
            return self._make_entry(ModelList.from_json(data), ttl_ms / 1000)
        if not await _take_lock(store, lock):
            # Not before the lock's holder may have stored its list: no Redis call per request.
            current.refresh_at = min(time.monotonic() + LOCK_POLL_SECONDS, current.expires_at)
            return current
        return self._refreshed(current, await self._fetch_and_share(store, route_key, key, lock))

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
            won = await _take_lock(store, lock)
            # A lock won is checked once more before fetching: the previous holder may have
            # stored its listing and let go between our read and our lock.
            if not won:
                await asyncio.sleep(LOCK_POLL_SECONDS)

        return self._make_entry(await self._fetch_and_share(store, route_key, key, lock), self._ttl)

    async def _fetch_and_share(self, store: RedisStore, route_key: str, key: str, lock: str) -> ModelList | None:
        """Fetch the list upstream (the lock is ours), store it in Redis, and let the lock go."""
        value = await self._fetch(route_key)
        try:
            if value is not None:
                await store.run("models cache", lambda r: r.set(key, value.to_json(), px=max(int(self._ttl * 1000), 1)))
            await store.run("models cache", lambda r: r.delete(lock))
        except StoreUnavailable:
            pass
        return value


async def _take_lock(store: RedisStore, lock: str) -> bool:
    return bool(await store.run("models cache", lambda r: r.set(lock, b"1", nx=True, px=int(LOCK_WAIT_SECONDS * 1000))))


async def _get_with_ttl(client: Any, key: str) -> tuple[bytes, int] | None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.pttl(key)
        data, ttl_ms = await pipe.execute()
    if data is None or ttl_ms is None or ttl_ms <= 0:
        return None
    return data, int(ttl_ms)
