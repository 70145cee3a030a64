"""
How a route picks one of its healthy replicas: `ROUTING_POLICY` (every route) and
`ROUTING_POLICY_<KEY>` (one route).

- `least_outstanding` (the default): the replica with the least load (`Replica.load`: this
  worker's requests in flight plus vLLM's waiting queue from its `/metrics`, while the reading is
  fresh); ties go round-robin, so that a light load spreads evenly.
- `prefix` (`prefix_affinity.py`): a prompt goes to the least loaded of the replicas that
  received its longest known prefix, unless it is loaded beyond the least loaded by
  `PREFIX_LOAD_MARGIN`.
- `session`: the requests of one session (the `SESSION_HEADER` header, else the body's `user`)
  go to one replica, where vLLM keeps the conversation's prefix in its KV cache. The replica is
  chosen by rendezvous hashing (the highest hash of session and replica URL), a pure function of
  the two: every worker of every instance makes the same choice with nothing shared, and a
  replica's ejection moves only its own sessions, each to its own next choice. The load is
  bounded: a replica with more than `LOAD_FACTOR` times the route's mean load takes no session
  new to it, which goes to its next choice instead; a session this
  worker has placed there before stays up to twice that bound, so that an overloaded replica
  sheds new sessions, not old ones. A request without a session is balanced as
  `least_outstanding`.

Each choice among several replicas is counted by its reason in `gateway_routing_decisions_total`,
but for least_outstanding's, which `gateway_replica_requests_total` counts already.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gateway.settings import RoutingPolicy

if TYPE_CHECKING:
    from gateway.routing.replicas import Replica

__all__ = ["LeastOutstanding", "Policy", "SessionAffinity", "rendezvous_score"]

# Why a replica was chosen, as counted in the metric.
LEAST_LOADED = "least_loaded"
AFFINITY = "affinity"  # the session's own replica
LOAD_OVERRIDE = "load_override"  # its own replica was over the bound: the next one that is not
NO_SESSION = "no_session"  # a request without a session key, balanced by load
FALLBACK = "fallback"  # every replica out of rotation: the one that should be back first


class Policy(Protocol):
    name: RoutingPolicy
    uses_session: bool  # whether `affinity` needs the request's session key
    # Whether it must see every placement, even where there is no choice (an index learns from it).
    learns: bool

    def affinity(self, session: str | None, body: bytes) -> Any:
        """What `choose` goes by, besides load, for a request of this session (if `uses_session`)
        and body: a session's key, a prompt's chain of block hashes, or None."""
        ...

    def choose(self, replicas: Sequence[Replica], candidates: list[Replica], affinity: Any) -> tuple[Replica, str]:
        """One of `candidates` (healthy, not yet tried; never empty) and the reason for it.
        `replicas` are all of the route's, in configured order; `affinity` as `affinity()` gave it."""
        ...


class LeastOutstanding:
    name: RoutingPolicy = "least_outstanding"
    uses_session = False
    learns = False

    def __init__(self) -> None:
        self._next = 0

    def affinity(self, session: str | None, body: bytes) -> Any:
        return None

    def choose(self, replicas: Sequence[Replica], candidates: list[Replica], affinity: Any) -> tuple[Replica, str]:
        return self.least_loaded(replicas, {replica: replica.load() for replica in candidates}), LEAST_LOADED

    def least_loaded(self, replicas: Sequence[Replica], loads: Mapping[Replica, float]) -> Replica:
        """Of the candidates (the keys of `loads`), the least loaded; ties round-robin in `replicas`' order."""
        fewest = min(loads.values())
        count = len(replicas)
        for offset in range(count):  # round-robin among the least loaded
            replica = replicas[(self._next + offset) % count]
            if loads.get(replica) == fewest:
                self._next = (self._next + offset + 1) % count
                return replica
        return next(iter(loads))  # unreachable: some candidate has the fewest


def rendezvous_score(session: str, url: str) -> int:
    """The same in every process: a hash of both, not Python's per-process `hash()`."""
    digest = hashlib.blake2b(f"{url}\0{session}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SessionAffinity:
    name: RoutingPolicy = "session"
    uses_session = True
    learns = False
    LOAD_FACTOR = 1.25
    # Sessions this worker has placed, newest last; the oldest are forgotten beyond this many.
    REMEMBERED = 100_000

    def __init__(self) -> None:
        self._balance = LeastOutstanding()
        self._placed: OrderedDict[str, Replica] = OrderedDict()

    def affinity(self, session: str | None, body: bytes) -> Any:
        return session

    def choose(self, replicas: Sequence[Replica], candidates: list[Replica], session: Any) -> tuple[Replica, str]:
        loads = {replica: replica.load() for replica in candidates}
        if not session:
            return self._balance.least_loaded(replicas, loads), NO_SESSION
        ranked = sorted(candidates, key=lambda replica: rendezvous_score(session, replica.url), reverse=True)
        bound = math.ceil(self.LOAD_FACTOR * (sum(loads.values()) + 1) / len(candidates))
        own = ranked[0]
        before = self._placed.get(session)
        if loads[own] < bound or (before is own and loads[own] < 2 * bound):
            return self._place(session, own), AFFINITY
        if before is not None and before in loads and loads[before] < 2 * bound:
            return self._place(session, before), LOAD_OVERRIDE  # where it went last time, still
        for replica in ranked[1:]:
            if loads[replica] < bound:
                return self._place(session, replica), LOAD_OVERRIDE
        return self._place(session, min(ranked, key=loads.__getitem__)), LOAD_OVERRIDE

    def _place(self, session: str, replica: Replica) -> Replica:
        placed = self._placed
        placed[session] = replica
        placed.move_to_end(session)
        if len(placed) > self.REMEMBERED:
            placed.popitem(last=False)
        return replica
