"""
The replicas of a route: load balancing, passive health, and failover.

`MODEL_ROUTE_<KEY>=URL1,URL2,...` makes a route of several replicas of one model. Each worker
keeps its own view of them, and shares one thing with the other workers of the machine: which
replicas are out of rotation (below).

- Balancing: the route's policy (`policies.py`) picks one of the healthy replicas: by default
  the least loaded, ties round-robin; with `prefix`, the replica that last received the
  prompt's longest known prefix; with `session`, the session's own replica. The in-flight count is a lease released on every exit path (success, error,
  timeout, client hang-up, cancellation): it is decremented in a `finally`, never by a later
  event that might not come.
- Passive health: a replica that refuses a connection, times out connecting, drops the
  connection before answering, or answers 502/503/504 is ejected at once. A background probe
  asks its `/models` every `REPLICA_PROBE_INTERVAL_SECONDS`; it returns to rotation at the
  first answer once its cool-down is over. The cool-down doubles with each ejection that
  follows a short return (a flapping replica), up to `REPLICA_COOLDOWN_MAX_SECONDS`.
- Failover: a failed attempt is retried on another replica, up to `UPSTREAM_MAX_ATTEMPTS`,
  as long as nothing but keepalive comments has reached the client. With every replica
  ejected, they are still tried (least recently failed first), so that a recovered replica is
  used at once and the client gets the real error: 502 naming the route.
- Shared ejections (`ejections.py`): an ejection takes the replica out of every worker's
  rotation, not only the rotation of the worker that met the failure, so the other workers stop
  sending it requests at once (for a host that drops packets, each such request would wait out
  the connect timeout). The worker that ejected it probes it: each probe that fails holds it out
  until past the next probe's answer, and the answer that brings it back clears the hold, unless
  another worker has held it longer since. If that worker dies, the hold runs out when its
  cool-down is over or two probe intervals and a probe's timeout after the last probe, whichever
  comes later, and the next failure ejects it again.
  The ejection count behind the growing cool-down, and the time it last came back, are shared
  too; the other figures (in flight, latency, errors) are each worker's own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.observability.metrics import metrics
from gateway.routing.policies import FALLBACK, LEAST_LOADED, LeastOutstanding, Policy
from gateway.shared import engine_load
from gateway.shared.ejections import EJECTIONS, HELD_UNTIL, RETURNED_AT, local_cells

__all__ = ["Replica", "Route"]

_LATENCY_WEIGHT = 0.2  # of the newest sample in the moving average


@dataclass(eq=False)
class Replica:
    url: str
    in_flight: int = 0
    # Ejected by this worker, which probes it: the monotonic time its cool-down ends. It may be
    # out of rotation without that, held out by another worker (`cells`).
    ejected_until: float | None = None
    last_error: str | None = None
    last_failure_at: float = 0.0
    latency_ms: float | None = None
    requests: int = 0
    errors: int = 0
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    cells: Any = field(default_factory=local_cells, repr=False)  # shared with the other workers
    held_until: float = 0.0  # what this worker last wrote to cells[HELD_UNTIL]
    # vLLM's own queue, as the machine last read it (`engine_metrics.py`); stale after this long.
    engine: Any = field(default_factory=engine_load.local_cells, repr=False)
    engine_stale_after: float = 0.0  # 0: engine metrics are not read
    _engine_seen: float = field(default=0.0, repr=False)  # the reading `backlog` last met
    _in_flight_then: int = field(default=0, repr=False)  # this worker's in flight when it met it

    def engine_reading(self) -> Any | None:
        """The cells of a reading young enough to go by, else None."""
        engine = self.engine
        read_at = engine[engine_load.READ_AT]
        if not read_at or time.monotonic() - read_at > self.engine_stale_after:
            return None
        return engine

    def load(self) -> float:
        """What balancing goes by: this worker's requests in flight (instant), plus vLLM's queue
        of waiting requests at its last fresh reading.

        vLLM's running requests are left out: they are mostly the gateway's own, which every
        worker sees in its in-flight counts at once, while a reading is up to an interval old.
        Balanced on readings of them, every worker sent its requests to whichever replica had
        looked least busy at the last reading, until the next one (121 / 88 / 91 requests over
        three idle replicas, 12 at a time). The waiting queue is what a replica cannot absorb,
        and what its next request's latency grows with.
        """
        engine = self.engine_reading()
        if engine is None:
            return self.in_flight
        return self.in_flight + engine[engine_load.WAITING]

    def backlog(self) -> float:
        """The replica's whole load as well as this worker can tell: vLLM's waiting and running
        requests at its last fresh reading (every worker's and every instance's), plus what this
        worker sent it since; this worker's in-flight count alone without a fresh reading. What
        tells an overloaded replica from the others (the prefix policy's margin), where `load`
        is what picks among them."""
        engine = self.engine_reading()
        if engine is None:
            return self.in_flight
        read_at = engine[engine_load.READ_AT]
        if read_at != self._engine_seen:
            self._engine_seen, self._in_flight_then = read_at, self.in_flight
        queued = engine[engine_load.WAITING] + engine[engine_load.RUNNING]
        return float(queued + max(0, self.in_flight - self._in_flight_then))

    @property
    def healthy(self) -> bool:
        """In rotation: not ejected by this worker, nor held out by any worker."""
        if self.ejected_until is not None:
            return False
        held = self.cells[HELD_UNTIL]
        return not held or held <= time.monotonic()

    @property
    def ejections(self) -> int:
        """Consecutive ejections, by any worker: the cool-down doubles with each."""
        return int(self.cells[EJECTIONS])

    def status(self) -> dict[str, Any]:
        engine = self.engine_reading()
        return {
            "url": self.url,
            "state": "healthy" if self.healthy else "ejected",
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
            "requests": self.requests,
            "errors": self.errors,
            "ejections": self.ejections,
            "last_error": self.last_error,
            "engine": None
            if engine is None
            else {
                "waiting": int(engine[engine_load.WAITING]),
                "running": int(engine[engine_load.RUNNING]),
                "kv_cache_usage": round(engine[engine_load.KV_USAGE], 4),
                "age_ms": round((time.monotonic() - engine[engine_load.READ_AT]) * 1000),
            },
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
        probe_timeout: float = 0.0,
        cells: Sequence[Any] | None = None,
        policy: Policy | None = None,
        engine_cells: Sequence[Any] | None = None,
        engine_stale_after: float = 0.0,
    ) -> None:
        """`cells`: each replica's cells in the shared table (`ejections.replica_cells`); None:
        this worker's own. `probe_timeout`: how long a probe may take to answer. `policy`: how a
        healthy replica is picked (default `least_outstanding`)."""
        self.key = key
        self.policy = policy or LeastOutstanding()
        self.urls = urls
        if cells is None:
            cells = [local_cells() for _ in urls]
        if engine_cells is None:
            engine_cells = [engine_load.local_cells() for _ in urls]
        self.replicas = [
            Replica(url, cells=own, engine=engine, engine_stale_after=engine_stale_after)
            for url, own, engine in zip(urls, cells, engine_cells, strict=True)
        ]
        self._probe = probe
        self._probe_interval = probe_interval
        self._cooldown_max = cooldown_max
        # A hold must outlast the gap to the next probe's answer: an interval, the probe's own
        # time, and an interval to spare.
        self._hold_for = 2 * probe_interval + probe_timeout
        self._in_flight = {r.url: metrics.replica_in_flight.labels(key, r.url) for r in self.replicas}
        self._decisions = functools.partial(metrics.routing_decisions_for, key, self.policy.name)

    def healthy(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.healthy]

    def choose(self, exclude: set[Replica], affinity: Any = None) -> Replica | None:
        """The policy's pick among the healthy replicas not yet tried, else the least recently
        failed one. `affinity`: what the policy goes by (`Policy.needs`)."""
        candidates = [r for r in self.replicas if r.healthy and r not in exclude]
        if not candidates:  # the one whose hold ends first, then the least recently failed here
            ejected = [r for r in self.replicas if r not in exclude]
            if not ejected:
                return None
            self._decisions(FALLBACK).inc()
            return min(ejected, key=lambda r: (r.cells[HELD_UNTIL], r.last_failure_at))
        if len(candidates) == 1 and not self.policy.learns:
            return candidates[0]  # nothing to decide (and least_loaded is not counted: below)
        replica, reason = self.policy.choose(self.replicas, candidates, affinity)
        if reason is not LEAST_LOADED:  # those are gateway_replica_requests_total already
            self._decisions(reason).inc()
        return replica

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
        cells = replica.cells
        if cells[EJECTIONS] and time.monotonic() - cells[RETURNED_AT] > self._cooldown(replica):
            cells[EJECTIONS] = 0  # it stayed up longer than its last cool-down: not flapping

    def failed(self, replica: Replica, reason: str) -> None:
        replica.errors += 1
        replica.last_error = reason
        replica.last_failure_at = time.monotonic()
        metrics.replica_errors.labels(self.key, replica.url).inc()
        if replica.ejected_until is None:  # not ejected here yet (another worker may have)
            replica.cells[EJECTIONS] += 1
            now = time.monotonic()
            replica.ejected_until = now + self._cooldown(replica)
            _hold(replica, max(replica.ejected_until, now + self._hold_for))
            metrics.replica_ejections.labels(self.key, replica.url).inc()
            if replica.probe is None or replica.probe.done():
                replica.probe = asyncio.ensure_future(self._probe_until_back(replica))

    def _cooldown(self, replica: Replica) -> float:
        return min(self._probe_interval * 2 ** max(replica.ejections - 1, 0), self._cooldown_max)

    async def _probe_until_back(self, replica: Replica) -> None:
        cells = replica.cells
        while (ejected_until := replica.ejected_until) is not None:
            await asyncio.sleep(self._probe_interval)
            answered = await self._probe(replica.url)
            now = time.monotonic()
            if answered and now >= ejected_until:
                replica.ejected_until = None
                cells[RETURNED_AT] = now
                if cells[HELD_UNTIL] == replica.held_until:  # no worker has held it longer since
                    cells[HELD_UNTIL] = 0.0
            else:  # still out: held out everywhere until past the next probe's answer
                _hold(replica, max(ejected_until, now + self._hold_for))

    def close(self) -> None:
        for replica in self.replicas:
            if replica.probe is not None:
                replica.probe.cancel()


def _hold(replica: Replica, until: float) -> None:
    """Keep `replica` out of every worker's rotation until `until` (monotonic), at least."""
    cells = replica.cells
    if cells[HELD_UNTIL] < until:
        cells[HELD_UNTIL] = replica.held_until = until
