"""
The `prefix` policy: a prompt goes where vLLM most likely holds its prefix in the KV cache.

vLLM skips the prefill of every block of a prompt it still holds (automatic prefix caching), so
the next turn of a conversation, or a prompt that opens with a shared system prompt, starts
sooner on the replica that served its prefix last. The prompt's chain of block hashes
(`prompt_chain.py`) is looked up in the machine's index (`shared/prefix_index.py`), shared with
the other instances through Redis (`prefix_sharing.py`):

- `prefix_hit`: of the replicas that received the longest known prefix, the least loaded (a
  conversation's turns have one; a shared system prompt soon has all), unless
- `load_override`: its load exceeds the least-loaded replica's by more than `PREFIX_LOAD_MARGIN`
  requests: the least loaded wins, and learns the whole chain;
- `no_match`: no prefix known (or its replica is out of rotation, or tried already): the least
  loaded, which learns the chain;
- `no_prompt`: a body without `messages` or `prompt`, or a prompt shorter than a block: the least loaded.

Load here is `Replica.backlog()`: vLLM's whole queue as last read (every worker's and every
instance's requests, waiting and running) and this worker's requests since. Sticky placements
need that global view (on each worker's in-flight counts alone, shared system prompts pulled whole
groups to one replica); `least_outstanding`'s `Replica.load()` leaves vLLM's running requests out. A replica that receives a prompt is recorded for every block of it that
it did not hold by the index already, and for the longest one it did (so that entry stays young).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gateway.routing.policies import LeastOutstanding
from gateway.routing.prompt_chain import prompt_chain, route_seed
from gateway.settings import RoutingPolicy
from gateway.shared.prefix_index import PrefixIndex

if TYPE_CHECKING:
    from gateway.routing.replicas import Replica

__all__ = ["PrefixAffinity", "Publisher"]

PREFIX_HIT = "prefix_hit"
LOAD_OVERRIDE = "load_override"
NO_MATCH = "no_match"
NO_PROMPT = "no_prompt"
# A known prefix of this many blocks (4 KB) or more is worth the whole margin; a shorter one, its share.
FULL_MARGIN_BLOCKS = 8


class Publisher(Protocol):
    def publish(self, route_key: str, url: str, keys: Sequence[int]) -> None:
        """Tell the other instances that `url` of `route_key` received the prefixes `keys`."""


class PrefixAffinity:
    name: RoutingPolicy = "prefix"
    uses_session = False
    learns = True

    def __init__(
        self,
        route_key: str,
        index: PrefixIndex,
        bits: Mapping[tuple[str, str], int],
        margin: float,
        publisher: Publisher | None = None,
    ) -> None:
        """`bits`: each replica's bit in the index's sets (`prefix_index.replica_bits`)."""
        self._route_key = route_key
        self._seed = route_seed(route_key)
        self._index = index
        self._bits = {url: bit for (key, url), bit in bits.items() if key == route_key}
        self._margin = margin
        self._publisher = publisher
        self._balance = LeastOutstanding()

    def affinity(self, session: str | None, body: bytes) -> list[int]:
        return prompt_chain(body, self._seed)

    def choose(self, replicas: Sequence[Replica], candidates: list[Replica], chain: Any) -> tuple[Replica, str]:
        backlogs = {replica: replica.backlog() for replica in candidates}
        if not chain:
            return self._balance.least_loaded(replicas, backlogs), NO_PROMPT
        matched, holders = self._index.longest(chain)
        bits = self._bits
        own = None
        if matched:  # the least loaded of the replicas that received the longest known prefix
            holding = [replica for replica in candidates if bits.get(replica.url, 0) & holders]
            if holding:
                own = min(holding, key=backlogs.__getitem__)
                # The more of the prompt is cached there, the more it is worth waiting for.
                margin = self._margin * min(1.0, matched / FULL_MARGIN_BLOCKS)
                if backlogs[own] <= min(backlogs.values()) + margin:
                    self._learn(own, chain[matched - 1 :])
                    return own, PREFIX_HIT
        chosen = self._balance.least_loaded(replicas, backlogs)
        self._learn(chosen, chain)
        return chosen, LOAD_OVERRIDE if own is not None else NO_MATCH

    def _learn(self, replica: Replica, keys: Sequence[int]) -> None:
        bit = self._bits.get(replica.url)
        if bit is None:
            return
        self._index.learn(keys, bit)
        if self._publisher is not None:
            self._publisher.publish(self._route_key, replica.url, keys)
