"""
One request's attempts over a route's replicas (`Dispatch`): the route's policy picks each,
a connection failure before the request went out or a 502/503/504 ejects the replica and tries
another, up to `UPSTREAM_MAX_ATTEMPTS`; a timeout after the request went out is not retried. With
every replica tried, the class of the last failure decides the status: refused 502, timed out 504.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.observability.metrics import metrics
from gateway.routing.replicas import Replica, Route
from gateway.upstream.client import Upstream, close_response, map_transport_error
from gateway.upstream.response import UpstreamResponse

__all__ = ["RETRYABLE_STATUSES", "Dispatch"]

RETRYABLE_STATUSES = frozenset({502, 503, 504})
# Failures after which the request may safely go to another replica: nothing was generated
# for the client yet (a read timeout is not one of them: the replica may just be slow).
_RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


class Dispatch:
    """One request's attempts over a route's replicas; `release()` must follow in a `finally`."""

    def __init__(self, route: Route, upstream: Upstream, max_attempts: int, affinity: Any = None) -> None:
        self.route = route
        self.affinity = affinity  # what the route's policy goes by: a session, a prompt's chain
        self.upstream = upstream
        self.max_attempts = max_attempts
        self.replica: Replica | None = None  # the replica holding this request's lease
        self.retries = 0

    async def post(self, endpoint: str, body: bytes, request_id: str) -> UpstreamResponse:
        """POST `body` to `endpoint` of one replica after another; the whole answer, read."""
        return await self._send(self.upstream.post, endpoint, body, request_id)

    async def open_stream(self, endpoint: str, body: bytes, request_id: str) -> UpstreamResponse:
        """The same for a stream: the answer as soon as its headers arrived, body unread."""
        return await self._send(self.upstream.open_stream, endpoint, body, request_id)

    async def _send(
        self, method: Callable[[str, bytes, str], Awaitable[UpstreamResponse]], endpoint: str, body: bytes,
        request_id: str,
    ) -> UpstreamResponse:  # fmt: skip
        """`method` on one replica after another until one gives a usable answer."""
        tried: set[Replica] = set()
        last: GatewayError | None = None
        while len(tried) < self.max_attempts:
            replica = self.route.choose(tried, self.affinity)
            if replica is None:
                break
            if tried:
                self.retries += 1
                metrics.upstream_retries.labels(self.route.key).inc()
            tried.add(replica)
            self.release()
            self.route.acquire(replica)
            self.replica = replica
            started = time.perf_counter()
            try:
                response = await method(replica.url + endpoint, body, self.upstream.attempt_id(request_id))
            except _RETRYABLE_ERRORS as exc:
                self.route.failed(replica, f"{type(exc).__name__}: {exc}")
                last = map_transport_error(exc, self.route.key)
                continue
            except httpx.HTTPError as exc:  # a timeout after the request went out: no retry
                raise map_transport_error(exc, self.route.key) from exc
            if response.status in RETRYABLE_STATUSES:
                self.route.failed(replica, f"HTTP {response.status}")
                if len(tried) < self.max_attempts and any(r not in tried for r in self.route.replicas):
                    await close_response(response)
                    continue
                return response  # the last replica's error is relayed as it is
            self.route.succeeded(replica, time.perf_counter() - started)
            return response
        message = f"route {self.route.key!r}: no replica could serve the request ({len(tried)} of {len(self.route.replicas)} tried)"
        if last is None:
            raise UpstreamUnavailable(message)
        # The class of the last failure decides the status: refused 502, timed out 504.
        raise type(last)(f"{message}: {last.message}", code=last.code)

    def release(self) -> None:
        if self.replica is not None:
            self.route.release(self.replica)
            self.replica = None
