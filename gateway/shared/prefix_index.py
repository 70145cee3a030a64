"""
Which replicas have received each prompt prefix, shared by the workers of a machine.

The `prefix` policy routes a prompt to a replica that received its longest known prefix, where
vLLM most likely still holds it in its KV cache. The keys are a prompt's chain of block hashes
(`routing/prompt_chain.py`, which seeds them with the route, so each route has entries of its own);
the value is the set of the route's replicas that received the prefix (a bit per replica, by its
place in the route's list), and when one last did. A system prompt that opens many conversations
soon has every replica in its set, and the policy picks the least loaded of them; the turns of one
conversation have only its own replica.

The index is a fixed table of doubles in shared memory, made by the main process before the
workers start, as the other tables are (`tables.py`): `BUCKETS` buckets of two slots, each slot a
key and its value, `replicas << 37 | centiseconds` (CLOCK_MONOTONIC, one clock for the whole
machine). A key goes in the bucket its CRC bits name: when both slots hold other keys, the older
entry gives way. An entry older than `ttl` is not believed (and a replica that receives it again
starts a new set). So the index is bounded (4 MiB), and ages out twice over: by time, and by newer
prompts taking the slots of older ones. A route of more than 16 replicas shares bits among them
(replica 16 has replica 0's): a guess that costs at worst a prefix-cache miss.

Slots are read and written without a lock: a double is read whole, and a reader that meets a key
whose value another worker is rewriting at that instant sees the older value; the worst any race
can do is send one request to a replica that does not hold its prefix.

The header holds the layout's fingerprint, this machine's random id (which tells its own entries
apart in Redis, `routing/prefix_sharing.py`), and the lease of the worker that reads Redis for
the machine.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.shared import tables

__all__ = ["BUCKETS", "REPLICA_BITS", "PrefixIndex", "create_table", "replica_bits", "take_lease"]

BUCKETS = 1 << 17  # of two slots: 262,144 prefixes, 4 MiB
_FINGERPRINT, _MACHINE, _HOLDER, _LEASE_UNTIL = 0, 1, 2, 3
_HEADER = 4
_KIND = "prefix\n"
_TIME_BITS = 37  # centiseconds: 43 years of uptime
_TIME_MASK = (1 << _TIME_BITS) - 1
REPLICA_BITS = 16  # with the time, 53 bits: a double's integers
_BUCKET_MASK = BUCKETS - 1
_CRC_SHIFT = 20  # a key is its chain's CRC above the block's number (`prompt_chain.py`)


def replica_bits(routes: Mapping[str, tuple[str, ...]]) -> dict[tuple[str, str], int]:
    """Each (route key, replica URL)'s bit in the sets of replicas: by its place in the route."""
    return {(key, url): 1 << (place % REPLICA_BITS) for key, urls in routes.items() for place, url in enumerate(urls)}


def create_table(routes: Mapping[str, tuple[str, ...]]) -> Any:
    """The machine's index for `routes`; make it in the main process, before the workers start."""
    table = multiprocessing.Array(ctypes.c_double, _HEADER + 4 * BUCKETS)
    values = table.get_obj()
    values[_FINGERPRINT] = tables.fingerprint(_KIND, routes)
    values[_MACHINE] = float(int.from_bytes(os.urandom(6), "big") or 1)
    return table


def take_lease(table: Any | None, pid: int, seconds: float) -> bool:
    """Whether `pid` reads the other machines' entries from Redis for this one, for `seconds`."""
    return tables.take_lease(table, _HOLDER, _LEASE_UNTIL, pid, seconds)


class PrefixIndex:
    """A view of the machine's table (`table`), or of a table of this process's own (None)."""

    def __init__(self, table: Any | None, routes: Mapping[str, tuple[str, ...]], ttl_seconds: float) -> None:
        self.shared = table
        if table is not None and table.get_obj()[_FINGERPRINT] != tables.fingerprint(_KIND, routes):
            self.shared = None  # laid out for other routes (settings changed under a running main process)
        if self.shared is None:
            values: Any = (ctypes.c_double * (_HEADER + 4 * BUCKETS))()
            values[_MACHINE] = float(int.from_bytes(os.urandom(6), "big") or 1)
        else:
            values = self.shared.get_obj()
        self.machine = int(values[_MACHINE])
        self._slots = memoryview(values).cast("B").cast("d")
        self._ttl = int(ttl_seconds * 100)

    def _replicas(self, key: int, now: int) -> int:
        """The set of replicas recorded for `key` if it is young enough, else 0."""
        slots = self._slots
        bucket = _HEADER + ((key >> _CRC_SHIFT) & _BUCKET_MASK) * 4
        if slots[bucket] == key:
            value = int(slots[bucket + 1])
        elif slots[bucket + 2] == key:
            value = int(slots[bucket + 3])
        else:
            return 0
        if now - (value & _TIME_MASK) > self._ttl:
            return 0
        return value >> _TIME_BITS

    def longest(self, chain: Sequence[int]) -> tuple[int, int]:
        """(blocks matched, replicas) for the longest prefix of `chain` in the index; (0, 0): none.

        From the whole prompt down, in growing steps (1, 2, 4, ... blocks), then halving back up:
        a repeated prompt costs one look, a conversation's next turn a few, and a new prompt of
        `n` blocks about log2(n). Entries of one prompt are written together, so the prefixes of a
        known one are known too; where that does not hold (an entry overwritten), the search may
        settle on a shorter prefix than the longest, never on one that is not there.
        """
        now = _now()
        count, step, missed = len(chain), 1, len(chain) + 1
        while True:
            replicas = self._replicas(chain[count - 1], now) if count else 0
            if replicas:
                break
            if count <= 1:
                return 0, 0
            missed = count
            count = max(count - step, 1)
            step *= 2
        while missed - count > 1:  # `count` is there, `missed` is not
            middle = (count + missed) // 2
            found = self._replicas(chain[middle - 1], now)
            if found:
                count, replicas = middle, found
            else:
                missed = middle
        return count, replicas

    def learn(self, keys: Iterable[int], replica: int) -> None:
        """Record that the replica of bit `replica` (`replica_bits`) received the prefixes `keys` now."""
        slots = self._slots
        now = _now()
        fresh = float(replica << _TIME_BITS | now)
        for key in keys:
            bucket = _HEADER + ((key >> _CRC_SHIFT) & _BUCKET_MASK) * 4
            if slots[bucket] == key:
                slots[bucket + 1] = self._joined(slots[bucket + 1], replica, now, fresh)
            elif slots[bucket + 2] == key:
                slots[bucket + 3] = self._joined(slots[bucket + 3], replica, now, fresh)
            else:  # the older slot gives way (an empty one is the oldest)
                first_older = int(slots[bucket + 1]) & _TIME_MASK <= int(slots[bucket + 3]) & _TIME_MASK
                slot = bucket if first_older else bucket + 2
                slots[slot] = key
                slots[slot + 1] = fresh

    def _joined(self, old: float, replica: int, now: int, fresh: float) -> float:
        value = int(old)
        if now - (value & _TIME_MASK) > self._ttl:
            return fresh  # the others' receipts are too old to believe
        return float((value >> _TIME_BITS | replica) << _TIME_BITS | now)


def _now() -> int:
    """CLOCK_MONOTONIC in centiseconds."""
    return int(time.monotonic() * 100)
