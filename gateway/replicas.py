"""
The replicas of a route: load balancing, passive health, and failover.

`MODEL_ROUTE_<KEY>=URL1,URL2,...` makes a route of several replicas of one model. Each worker
keeps its own view of them, and shares one thing with the other workers of the machine: which
replicas are out of rotation (below).

- Balancing: a request goes to the healthy replica with the fewest requests in flight; ties go
  round-robin, so a light load spreads evenly too. The in-flight count is a lease released on
  every exit path (success, error, timeout, client hang-up, cancellation): it is decremented in
  a `finally`, never by a later event that might not come.
- Passive health: a replica that refuses a connection, times out connecting, drops the
  connection before answering, or answers 502/503/504 is ejected at once. A background probe
  asks its `/models` every `REPLICA_PROBE_INTERVAL_SECONDS`; it returns to rotation at the
  first answer once its cool-down is over. The cool-down doubles with each ejection that
  follows a short return (a flapping replica), up to `REPLICA_COOLDOWN_MAX_SECONDS`.
- Failover: a failed attempt is retried on another replica, up to `UPSTREAM_MAX_ATTEMPTS`,
  as long as nothing but keepalive comments has reached the client. With every replica
  ejected, they are still tried (least recently failed first), so that a recovered replica is
  used at once and the client gets the real error: 502 naming the route.
- Shared ejections: a worker that ejects a replica writes the end of its cool-down to a table in
  shared memory (`create_ejection_table`, made by the main process), and every worker leaves the
  replica out of rotation until then. So a replica that went down costs the machine one failed
  attempt, not one per worker: that matters for a host that drops packets, where each attempt
  waits out the connect timeout. The worker that ejected it probes it; while the probe fails it
  keeps the table's entry a little ahead of the clock, and it clears the entry when the replica
  answers again. If that worker dies, the entry runs out within a few probe intervals and the
  next worker to meet the dead replica takes over.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import GatewayError, UpstreamUnavailable
from .metrics import metrics
from .upstream import close_response, map_transport_error

__all__ = ["RETRYABLE_STATUSES", "Dispatch", "Replica", "Route", "create_ejection_table", "ejection_slots"]

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
_LATENCY_WEIGHT = 0.2  # of the newest sample in the moving average
# How long a failed probe keeps a replica out of the other workers' rotation, in probe intervals
# (each probe also counts its own duration): the entry must outlast the gap to the next probe.
_HOLD_INTERVALS = 2


def ejection_slots(routes: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """The first slot of each route's replicas in the ejection table, the same in every process."""
    slots: dict[str, int] = {}
    total = 0
    for key in sorted(routes):  # not the environment's order: every process must agree
        slots[key] = total
        total += len(routes[key])
    return slots


def create_ejection_table(routes: Mapping[str, tuple[str, ...]]) -> Any:
    """Shared memory for `Route(shared=...)`; make it in the main process, before the workers start.

    One double per replica: the monotonic time until which it is out of rotation (0: in rotation).
    CLOCK_MONOTONIC is the same for every process of a machine. Entries are read and written
    without the lock: an aligned double is read whole, and a lost update can only shorten one
    hold, until the next probe writes it again.
    """
    return multiprocessing.Array(ctypes.c_double, max(sum(len(urls) for urls in routes.values()), 1))


@dataclass(eq=False)
class Replica:
    url: str
    in_flight: int = 0
    ejected_until: float | None = None  # monotonic time the cool-down ends; None: in rotation
    ejections: int = 0  # consecutive ejections, for the growing cool-down
    returned_at: float = 0.0
    last_error: str | None = None
    last_failure_at: float = 0.0
    latency_ms: float | None = None
    requests: int = 0
    errors: int = 0
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    shared: Any = field(default=None, repr=False)  # the ejection table's values, if shared
    slot: int = 0  # this replica's entry in `shared`

    @property
    def healthy(self) -> bool:
        """In rotation: not ejected by this worker, nor by another one for a while yet."""
        if self.ejected_until is not None:
            return False
        shared = self.shared
        return shared is None or shared[self.slot] <= time.monotonic()

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": "healthy" if self.healthy else "ejected",
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
            "requests": self.requests,
            "errors": self.errors,
            "ejections": self.ejections,
            "last_error": self.last_error,
        }


class Route:
    """A route key and its replicas, as this worker sees them."""

    def __init__(
        self,
        key: str,
        urls: tuple[str, ...],
        probe: Callable[[str], Awaitable[bool]],
        probe_interval: float,
        cooldown_max: float,
        shared: Any = None,
        first_slot: int = 0,
    ) -> None:
        """`shared`: the values of `create_ejection_table()` (`.get_obj()`), with this route's
        replicas from `first_slot` on (`ejection_slots()`); None: this worker's view alone."""
        self.key = key
        self.urls = urls
        self.replicas = [Replica(url, shared=shared, slot=first_slot + i) for i, url in enumerate(urls)]
        self._probe = probe
        self._probe_interval = probe_interval
        self._cooldown_max = cooldown_max
        self._next = 0
        self._in_flight = {r.url: metrics.replica_in_flight.labels(key, r.url) for r in self.replicas}

    def healthy(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.healthy]

    def choose(self, exclude: set[Replica]) -> Replica | None:
        """The least-loaded healthy replica not yet tried, else the least recently failed one."""
        candidates = [r for r in self.replicas if r.healthy and r not in exclude]
        if not candidates:
            ejected = [r for r in self.replicas if r not in exclude]
            return min(ejected, key=lambda r: r.last_failure_at) if ejected else None
        fewest = min(r.in_flight for r in candidates)
        count = len(self.replicas)
        for offset in range(count):  # round-robin among the least loaded
            replica = self.replicas[(self._next + offset) % count]
            if replica in candidates and replica.in_flight == fewest:
                self._next = (self._next + offset + 1) % count
                return replica
        return candidates[0]  # unreachable: some candidate has the fewest

    def acquire(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.requests += 1
        self._in_flight[replica.url].inc()
        metrics.replica_requests_for(self.key, replica.url).inc()

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self._in_flight[replica.url].dec()

    def succeeded(self, replica: Replica, seconds: float) -> None:
        sample = seconds * 1000
        previous = replica.latency_ms
        replica.latency_ms = sample if previous is None else previous + _LATENCY_WEIGHT * (sample - previous)
        if replica.ejections and time.monotonic() - replica.returned_at > self._cooldown(replica):
            replica.ejections = 0  # it stayed up longer than its last cool-down: not flapping

    def failed(self, replica: Replica, reason: str) -> None:
        replica.errors += 1
        replica.last_error = reason
        replica.last_failure_at = time.monotonic()
        metrics.replica_errors.labels(self.key, replica.url).inc()
        if replica.ejected_until is None:  # not ejected here yet (another worker may have)
            replica.ejections += 1
            replica.ejected_until = time.monotonic() + self._cooldown(replica)
            # Past the cool-down, until the first probe has answered: it clears or extends this.
            _hold(replica, replica.ejected_until + _HOLD_INTERVALS * self._probe_interval)
            metrics.replica_ejections.labels(self.key, replica.url).inc()
            if replica.probe is None or replica.probe.done():
                replica.probe = asyncio.ensure_future(self._probe_until_back(replica))

    def _cooldown(self, replica: Replica) -> float:
        return min(self._probe_interval * 2 ** max(replica.ejections - 1, 0), self._cooldown_max)

    async def _probe_until_back(self, replica: Replica) -> None:
        while replica.ejected_until is not None:
            await asyncio.sleep(self._probe_interval)
            started = time.monotonic()
            if await self._probe(replica.url) and time.monotonic() >= replica.ejected_until:
                replica.ejected_until = None
                replica.returned_at = time.monotonic()
                if replica.shared is not None:
                    replica.shared[replica.slot] = 0.0  # back in every worker's rotation
            else:  # still out: keep the other workers away until after the next probe
                now = time.monotonic()
                gap = self._probe_interval + (now - started)  # to the next probe's answer, about
                _hold(replica, max(replica.ejected_until, now + _HOLD_INTERVALS * gap))

    def close(self) -> None:
        for replica in self.replicas:
            if replica.probe is not None:
                replica.probe.cancel()


def _hold(replica: Replica, until: float) -> None:
    """Keep `replica` out of every worker's rotation until `until` (monotonic), at least."""
    shared = replica.shared
    if shared is not None and shared[replica.slot] < until:
        shared[replica.slot] = until


class Dispatch:
    """One request's attempts over a route's replicas; `release()` must follow in a `finally`."""

    def __init__(self, route: Route, max_attempts: int) -> None:
        self.route = route
        self.max_attempts = max_attempts
        self.replica: Replica | None = None  # the replica holding this request's lease
        self.retries = 0

    async def send(self, call: Callable[[str], Awaitable[httpx.Response]]) -> httpx.Response:
        """`call(base_url)` on one replica after another until one gives a usable answer."""
        tried: set[Replica] = set()
        last: GatewayError | None = None
        while len(tried) < self.max_attempts:
            replica = self.route.choose(tried)
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
                response = await call(replica.url)
            except _RETRYABLE_ERRORS as exc:
                self.route.failed(replica, f"{type(exc).__name__}: {exc}")
                last = map_transport_error(exc, self.route.key)
                continue
            except httpx.HTTPError as exc:  # a timeout after the request went out: no retry
                raise map_transport_error(exc, self.route.key) from exc
            if response.status_code in RETRYABLE_STATUSES:
                self.route.failed(replica, f"HTTP {response.status_code}")
                if len(tried) < self.max_attempts and self.route.choose(tried) is not None:
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
