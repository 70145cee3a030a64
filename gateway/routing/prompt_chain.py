"""
A prompt cut into fixed blocks and hashed as a chain: the keys the `prefix` policy routes by.

Key `i` stands for the whole prompt up to the end of block `i` (a CRC-32 carried from block to
block, so each key costs its own block only), and two requests share their first `n` keys when
their prompts agree for `n` blocks: the next turn of a conversation repeats the previous turn's
prompt, and a shared system prompt opens many. Only whole blocks count, as in vLLM's own cache.

The prompt is read from the body as it came, without parsing it: from the `"messages"` key (a
chat) or else the `"prompt"` key (a completion) to the end. One client serialises the messages it
repeats the same way each turn, so their bytes are a stable stand-in for the text, and parsing 8 KB
of JSON would cost more than hashing it (5 µs against 4 µs here). Two clients that serialise a
shared system prompt differently (spaces, key order, escapes) do not share its blocks; each
conversation still keeps to its replica.

Keys are computed when asked for (`PromptChain`): a lookup needs a few of them (`PrefixIndex.longest`
asks for the whole prompt's, then fewer and fewer blocks), and a placement those past the known
prefix, so that a repeated prompt or a conversation's next turn costs a few CRC calls over the
whole body, not one per block (8 KB: about 7 µs here instead of 11).

The keys fit in 52 bits, so that a double of the shared index holds one exactly: the CRC (seeded
with the route's key, so that routes do not share entries) and the block's number.
"""

from __future__ import annotations

import zlib

__all__ = ["BLOCK_BYTES", "MAX_BLOCKS", "PromptChain", "route_seed"]

BLOCK_BYTES = 512
# Beyond this many blocks (64 KB) a prompt is told apart by its beginning: the hashing and the
# index's work stay bounded for huge prompts, and a long conversation still keeps to one replica.
MAX_BLOCKS = 128
_INDEX_BITS = 20


def route_seed(route_key: str) -> int:
    return zlib.crc32(route_key.encode())


class PromptChain:
    """The chain of keys of the prompt in a JSON request body: `key(n)` stands for its first `n`
    blocks (1 <= n <= len(chain)); an empty chain when there is no prompt of a whole block."""

    __slots__ = ("_body", "_crcs", "_start", "blocks")

    def __init__(self, body: bytes, seed: int) -> None:
        start = body.find(b'"messages"')
        if start < 0:
            start = body.find(b'"prompt"')
        self._body = body
        self._start = start
        self.blocks = min((len(body) - start) // BLOCK_BYTES, MAX_BLOCKS) if start >= 0 else 0
        self._crcs = {0: seed}  # blocks -> the CRC of the prompt's first that many

    def __len__(self) -> int:
        return self.blocks

    def key(self, blocks: int) -> int:
        crcs = self._crcs
        crc = crcs.get(blocks)
        if crc is None:
            below = max(known for known in crcs if known < blocks)
            start = self._start
            crc = crcs[blocks] = zlib.crc32(
                self._body[start + below * BLOCK_BYTES : start + blocks * BLOCK_BYTES], crcs[below]
            )
        return crc << _INDEX_BITS | (blocks - 1)

    def prepare(self, counts: list[int]) -> None:
        """Compute the keys of `counts` (ascending) in one pass over the body."""
        crcs, body, start = self._crcs, self._body, self._start
        below = max(known for known in crcs if known < counts[0]) if counts[0] not in crcs else counts[0]
        crc = crcs[below]
        for blocks in counts:
            if blocks not in crcs:
                crcs[blocks] = crc = zlib.crc32(body[start + below * BLOCK_BYTES : start + blocks * BLOCK_BYTES], crc)
            else:
                crc = crcs[blocks]
            below = blocks

    def keys(self, first: int, last: int) -> list[int]:
        """The keys of `first` to `last` blocks, in order."""
        counts = list(range(first, last + 1))
        if counts:
            self.prepare(counts)
        crcs = self._crcs
        return [crcs[blocks] << _INDEX_BITS | (blocks - 1) for blocks in counts]
