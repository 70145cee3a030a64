"""
The worker's Redis connection, wrapped so that an outage degrades instead of failing requests.

Redis is shared state, never the only state: every caller has a local fallback. Calls have
short timeouts and no retries. After a failure the store is marked down for a moment, so an
outage costs one timeout now and then instead of one per request; the first failure of an
outage is logged once, and the first success after it says that Redis is back.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, TypeVar

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

__all__ = ["RedisStore", "StoreUnavailable", "connect_redis"]

T = TypeVar("T")
logger = logging.getLogger("gateway.redis")

# How long after a failure Redis is left alone before the next attempt.
RETRY_INTERVAL_SECONDS = 1.0
# Per call. A rate-limit check sits in front of every request; a slow Redis must not stall it.
SOCKET_TIMEOUT_SECONDS = 0.25


class StoreUnavailable(Exception):
    """Redis did not answer (or is in its back-off period): use the local fallback."""


def connect_redis(url: str) -> Redis:
    """A client with hot-path timeouts: redis-py's defaults retry for seconds."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


class RedisStore:
    """Runs Redis calls, tracking outages; `on_fallback(purpose)` counts each fallback."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._on_fallback = on_fallback
        self._retry_at = 0.0
        self._down = False

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def is_down(self) -> bool:
        return self._down

    async def run(self, purpose: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        """Run `call(client)`; raise `StoreUnavailable` if Redis fails or is backing off."""
        if self._down and time.monotonic() < self._retry_at:
            self._fell_back(purpose)
            raise StoreUnavailable(purpose)
        try:
            result = await call(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._down:
                logger.warning("redis unavailable (%s: %s); using local %s until it answers", type(exc).__name__, exc, purpose)
            self._down = True
            self._retry_at = time.monotonic() + RETRY_INTERVAL_SECONDS
            self._fell_back(purpose)
            raise StoreUnavailable(purpose) from exc
        if self._down:
            self._down = False
            logger.warning("redis is answering again; shared %s resumed", purpose)
        return result

    def _fell_back(self, purpose: str) -> None:
        if self._on_fallback is not None:
            self._on_fallback(purpose)

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except (RedisError, OSError):
            pass
