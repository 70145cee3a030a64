"""
The `prefix` index shared by every instance, through a Redis stream.

Each worker records its placements in its machine's index at once (`shared/prefix_index.py`)
and queues them here; every `FLUSH_SECONDS` it appends what it queued to one stream
(`XADD`, one entry per replica: the machine's id, the route, the replica's URL and the keys),
trimmed to about `STREAM_LENGTH` entries. One worker per machine (the holder of the index's
lease) reads the entries that other machines appended since its last read and records them in
the machine's index. No request waits for Redis: a request is routed by the machine's index,
which learns the other instances' placements a flush and a read later (about 0.1 s).

With Redis down, the queue is dropped (the machine's own index holds it), each machine routes by
what it learned itself, and `gateway_prefix_index_shared` says 0; when Redis answers again, the
reader goes on from the last entry it read, and the gauge says 1.
"""

from __future__ import annotations

import asyncio
import os
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.observability.metrics import metrics
from gateway.shared.prefix_index import PrefixIndex, take_lease
from gateway.shared.redis_store import Client, RedisStore, StoreUnavailable

__all__ = ["PrefixSharing"]

FLUSH_SECONDS = 0.05
STREAM_LENGTH = 20_000  # entries: at one entry per replica and flush, minutes of placements
_MAX_QUEUED = 100_000  # keys; beyond, placements are not shared until the next flush
_READ_COUNT = 1000
_PURPOSE = "prefix index"


class PrefixSharing:
    def __init__(
        self, store: RedisStore, index: PrefixIndex, bits: Mapping[tuple[str, str], int], table: Any | None
    ) -> None:
        """`table`: the machine's shared index (whose lease says who reads), None in a single process."""
        self._store = store
        self._index = index
        self._bits = bits
        self._table = table
        self._stream = store.key("prefix", "index")
        self._machine = str(index.machine).encode()
        self._queued: dict[tuple[str, str], list[int]] = {}
        self._queued_keys = 0
        self._last_id: bytes | None = None  # the last entry read; None: not known yet
        self._task: asyncio.Task[None] | None = None

    def publish(self, route_key: str, url: str, keys: Sequence[int]) -> None:
        if self._queued_keys < _MAX_QUEUED:
            self._queued.setdefault((route_key, url), []).extend(keys)
            self._queued_keys += len(keys)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        pid = os.getpid()
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()
            if take_lease(self._table, pid, 20 * FLUSH_SECONDS):
                await self.read()
            metrics.prefix_index_shared.set(0 if self._store.is_down else 1)

    async def flush(self) -> None:
        """Append the queued placements to the stream (dropped if Redis fails)."""
        if not self._queued:
            return
        queued, self._queued, self._queued_keys = self._queued, {}, 0

        async def append(client: Client) -> Any:
            pipeline = client.pipeline(transaction=False)
            for (route_key, url), keys in queued.items():
                entry = {"m": self._machine, "r": route_key, "u": url, "k": array("Q", keys).tobytes()}
                pipeline.xadd(self._stream, entry, maxlen=STREAM_LENGTH, approximate=True)  # type: ignore[arg-type]
            return await pipeline.execute()

        try:
            await self._store.run(_PURPOSE, append)
        except StoreUnavailable:
            return
        metrics.prefix_index_updates.labels("published").inc(sum(len(keys) for keys in queued.values()))

    async def read(self) -> None:
        """Record the other machines' placements appended since the last read."""
        try:
            if self._last_id is None:  # from now on: what came before is older than this machine's view
                latest: Any = await self._store.run(_PURPOSE, lambda client: client.xrevrange(self._stream, count=1))
                self._last_id = latest[0][0] if latest else b"0-0"
                return
            last = self._last_id
            replies: Any = await self._store.run(
                _PURPOSE, lambda client: client.xread({self._stream: last}, count=_READ_COUNT)
            )
        except StoreUnavailable:
            return
        streams = replies.items() if isinstance(replies, dict) else replies or ()
        received = 0
        for _stream, entries in streams:
            for entry_id, fields in entries:
                self._last_id = entry_id
                received += self._record(fields)
        if received:
            metrics.prefix_index_updates.labels("received").inc(received)

    def _record(self, fields: Mapping[bytes, bytes]) -> int:
        if fields.get(b"m") == self._machine:
            return 0  # this machine's own: its index has them
        try:
            bit = self._bits.get((fields[b"r"].decode(), fields[b"u"].decode()))
            keys = array("Q")
            keys.frombytes(fields[b"k"])
        except (KeyError, UnicodeDecodeError, ValueError):
            return 0  # not an entry of this version's: skipped
        if bit is None:
            return 0  # a replica this instance does not route to
        self._index.learn(keys, bit)
        return len(keys)
