"""
Which replica most recently received each prompt prefix, shared by the workers of a machine.

The `prefix` policy routes a prompt to the replica that last received its longest known prefix,
where vLLM most likely still holds it in its KV cache. The keys are a prompt's chain of block
hashes (`routing/prompt_chain.py`); the value is the replica (its number in the machine's layout,
`replica_numbers`) and when it received the prefix.

The index is a fixed table of doubles in shared memory, made by the main process before the
workers start, as the other tables are (`tables.py`): `BUCKETS` buckets of two slots, each slot a
key and its value, `(replica + 1) << 40 | milliseconds` (CLOCK_MONOTONIC, one clock for the whole
machine). A key goes in the bucket its CRC bits name: when both slots hold other keys, the older
entry gives way. An entry older than `ttl` is not believed. So the index is bounded (about
4 MiB), and ages out twice over: by time, and by newer prompts taking the slots of older ones.

Slots are read and written without a lock: a double is read whole, and a reader that meets a key
whose value another worker is rewriting at that instant sees the older value; the worst any race
can do is send one request to a replica that no longer holds its prefix.

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

__all__ = ["BUCKETS", "PrefixIndex", "create_table", "replica_numbers", "take_lease"]

BUCKETS = 1 << 17  # of two slots: 262,144 prefixes, 4 MiB
_FINGERPRINT, _MACHINE, _HOLDER, _LEASE_UNTIL = 0, 1, 2, 3
_HEADER = 4
_KIND = "prefix\n"
_TIME_BITS = 40
_TIME_MASK = (1 << _TIME_BITS) - 1
_BUCKET_MASK = BUCKETS - 1
_CRC_SHIFT = 20  # a key is its chain's CRC above the block's number (`prompt_chain.py`)


def replica_numbers(routes: Mapping[str, tuple[str, ...]]) -> dict[tuple[str, str], int]:
    """Each (route key, replica URL)'s number, the same in every process with these routes."""
    numbers: dict[tuple[str, str], int] = {}
    for key in sorted(routes):
        for url in routes[key]:
            numbers.setdefault((key, url), len(numbers))
    return numbers


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
        self._ttl_ms = int(ttl_seconds * 1000)

    def _replica(self, key: int, now: int) -> int:
        """The replica recorded for `key` if it is young enough, else -1."""
        slots = self._slots
        bucket = _HEADER + ((key >> _CRC_SHIFT) & _BUCKET_MASK) * 4
        if slots[bucket] == key:
            value = int(slots[bucket + 1])
        elif slots[bucket + 2] == key:
            value = int(slots[bucket + 3])
        else:
            return -1
        if now - (value & _TIME_MASK) > self._ttl_ms:
            return -1
        return (value >> _TIME_BITS) - 1

    def longest(self, chain: Sequence[int]) -> tuple[int, int]:
        """(blocks matched, replica) for the longest prefix of `chain` in the index; (0, -1): none.

        From the whole prompt down, in growing steps (1, 2, 4, ... blocks), then halving back up:
        a repeated prompt costs one look, a conversation's next turn a few, and a new prompt of
        `n` blocks about log2(n). Entries of one prompt are written together, so the prefixes of a
        known one are known too; where that does not hold (an entry overwritten), the search may
        settle on a shorter prefix than the longest, never on one that is not there.
        """
        now = _now_ms()
        count, step, missed = len(chain), 1, len(chain) + 1
        while True:
            replica = self._replica(chain[count - 1], now) if count else -1
            if replica >= 0:
                break
            if count <= 1:
                return 0, -1
            missed = count
            count = max(count - step, 1)
            step *= 2
        while missed - count > 1:  # `count` is there, `missed` is not
            middle = (count + missed) // 2
            found = self._replica(chain[middle - 1], now)
            if found >= 0:
                count, replica = middle, found
            else:
                missed = middle
        return count, replica

    def learn(self, keys: Iterable[int], replica: int) -> None:
        """Record that `replica` received the prefixes `keys` now."""
        slots = self._slots
        now = _now_ms()
        value = float((replica + 1) << _TIME_BITS | now)
        for key in keys:
            bucket = _HEADER + ((key >> _CRC_SHIFT) & _BUCKET_MASK) * 4
            if slots[bucket] == key:
                slots[bucket + 1] = value
            elif slots[bucket + 2] == key:
                slots[bucket + 3] = value
            else:  # the older slot gives way (an empty one is the oldest)
                first_older = int(slots[bucket + 1]) & _TIME_MASK <= int(slots[bucket + 3]) & _TIME_MASK
                slot = bucket if first_older else bucket + 2
                slots[slot] = key
                slots[slot + 1] = value


def _now_ms() -> int:
    return int(time.monotonic() * 1000)
