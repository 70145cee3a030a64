"""
The worker's Redis connection, wrapped so that an outage degrades instead of failing requests.

Three ways to reach it, with the same timeouts and the same outage handling: one server
(`REDIS_URL`), a Redis Cluster (`REDIS_CLUSTER=true`: `REDIS_URL` names any node, the client
finds the others and follows the slots), or a master watched by Sentinel (`REDIS_SENTINELS`,
`REDIS_SENTINEL_MASTER`: each new connection asks the sentinels where the master is, so after
a failover the probe below reconnects to the new one). Every key is hash-tagged (`key()`), so
that the keys of one client or one route share a cluster slot.

Redis is shared state, never the only state: every caller has a local fallback. Calls have
short timeouts and no retries. After a failure the store is marked down and callers use their
fallback at once, while a background probe pings Redis every second; so an outage costs one
timeout, not one per request. The outage is logged once when it starts and once when it ends.

An error that Redis answers (a `ResponseError`: a script or command the gateway got wrong, a key
of the wrong type, a refusal such as OOM) is no outage: Redis is there, and marking it down
would switch every other purpose to per-worker state too (with RATE_LIMIT_PER_MIN=100000 the
limiter's script failed on every call, and the models cache stopped being shared). Such a call
alone falls back; the error is logged at ERROR once per purpose and counted every time
(`on_error`). Only the replies that mean Redis cannot serve now (a replica that was the
master, a cluster that is down or resharding, a script still running) count as an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    DataError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

__all__ = ["Client", "RedisStore", "StoreUnavailable", "connect_redis", "is_outage"]

T = TypeVar("T")
Client: TypeAlias = Redis | RedisCluster
# What a failed call can raise. The cluster client's own errors (no node reachable, a slot no
# node serves) are not RedisErrors.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
logger = logging.getLogger("gateway.redis")

# How often Redis is asked whether it is back, while it is down.
RETRY_INTERVAL_SECONDS = 1.0
# Per call. A rate-limit check sits in front of every request; a slow Redis must not stall it.
SOCKET_TIMEOUT_SECONDS = 0.25


class StoreUnavailable(Exception):
    """Redis did not answer (or is in its back-off period), or answered with an error: use the
    local fallback."""


def is_outage(exc: BaseException) -> bool:
    """Whether a failed call means Redis cannot serve now (rather than that the call was wrong)."""
    if isinstance(exc, (ReadOnlyError, ClusterDownError, TryAgainError)):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).startswith("BUSY ")  # a script has run past its time limit: Redis waits for it
    return not isinstance(exc, DataError)  # DataError: an argument the client could not encode


def connect_redis(
    url: str, cluster: bool = False, sentinels: Sequence[tuple[str, int]] = (), sentinel_master: str | None = None
) -> Client:
    """A client with hot-path timeouts: redis-py's defaults retry for seconds.

    One immediate retry remains, so that a pooled connection that went stale (Redis restarted)
    is replaced instead of failing the call. With `sentinels`, `url` gives only the database
    and credentials: the sentinels give the master's address.
    """
    timeouts: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
    }
    options: dict[str, Any] = {**timeouts, "retry": Retry(NoBackoff(), 1), "health_check_interval": 30}
    if cluster:
        return RedisCluster.from_url(url, **options)
    if sentinels:
        assert sentinel_master is not None, "settings require REDIS_SENTINEL_MASTER with REDIS_SENTINELS"
        # The sentinels are asked in turn; each one that does not answer costs one timeout, no retry.
        manager = Sentinel(list(sentinels), sentinel_kwargs={**timeouts, "retry": Retry(NoBackoff(), 0)})
        return manager.master_for(sentinel_master, **options, **_database_and_credentials(url))
    return Redis.from_url(url, **options)


def _database_and_credentials(url: str) -> dict[str, Any]:
    """What `url` says besides the address: database, user, password, TLS and its options."""
    options: dict[str, Any] = dict(parse_url(url))
    for address in ("host", "port", "path"):
        options.pop(address, None)
    if options.pop("connection_class", None) is not None:  # rediss:// (settings allow no unix:// here)
        options["ssl"] = True  # the sentinel pool picks its TLS connection class for this
    return options


async def _ping(client: Client) -> None:
    """Raises unless Redis serves again; in a cluster every primary must answer (every slot served)."""
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


class RedisStore:
    """Runs Redis calls, tracking outages; `on_fallback(purpose)` counts each fallback, and
    `on_error(purpose)` each error that Redis answered."""

    def __init__(
        self,
        client: Client,
        prefix: str,
        on_fallback: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._on_fallback = on_fallback
        self._on_error = on_error
        self._reported: set[str] = set()  # purposes whose reply errors were logged
        self._down = False
        self._probe: asyncio.Task[None] | None = None

    def key(self, kind: str, tag: str, *parts: str) -> str:
        """`{prefix}{kind}:{{tag}}[:part...]`. The tag in braces is all a cluster hashes, so
        that all keys of one tag (a route's list and its lock) share a slot, and a script or
        pipeline over them stays on one node."""
        return f"{self.prefix}{kind}:{{{tag}}}" + "".join(":" + part for part in parts)

    @property
    def is_down(self) -> bool:
        return self._down

    async def run(self, purpose: str, call: Callable[[Client], Awaitable[T]]) -> T:
        """Run `call(client)`; raise `StoreUnavailable` if Redis fails or is known to be down."""
        if self._down:
            self._fell_back(purpose)
            raise StoreUnavailable(purpose)
        try:
            return await call(self.client)
        except FAILURES as exc:
            if is_outage(exc):
                self._mark_down(purpose, exc)
            else:
                self._answered_error(purpose, exc)
            self._fell_back(purpose)
            raise StoreUnavailable(purpose) from exc

    def _answered_error(self, purpose: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(purpose)
        if purpose not in self._reported:  # once: the next ones are the same bug, counted
            self._reported.add(purpose)
            logger.error(
                "redis answered the %s with an error (%s: %s); such calls use local state, Redis stays in use",
                purpose,
                type(exc).__name__,
                exc,
            )

    def _mark_down(self, purpose: str, exc: BaseException) -> None:
        if not self._down:
            logger.warning(
                "redis unavailable (%s: %s); using local %s until it answers", type(exc).__name__, exc, purpose
            )
        self._down = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        # While Redis is down no request waits for it: this probe alone asks, now and then.
        while self._down:
            await asyncio.sleep(RETRY_INTERVAL_SECONDS)
            try:
                await _ping(self.client)
            except FAILURES:
                continue
            # Connections from before the outage are dead: drop them rather than fail on them.
            # (A cluster client replaces a node's connections itself when they fail.)
            if isinstance(self.client, Redis):
                await self.client.connection_pool.disconnect()
            self._down = False
            logger.warning("redis is answering again; shared state resumed")

    def _fell_back(self, purpose: str) -> None:
        if self._on_fallback is not None:
            self._on_fallback(purpose)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        # A Sentinel-managed client leaves the sentinels' own clients to whoever made them: here.
        sentinels = getattr(getattr(self.client, "connection_pool", None), "sentinel_manager", None)
        for closing in (self.client, sentinels):
            if closing is None:
                continue
            try:
                await closing.aclose()
            except FAILURES:
                pass
