"""
A prompt cut into fixed blocks and hashed as a chain: the keys the `prefix` policy routes by.

Key `i` stands for the whole prompt up to the end of block `i` (a CRC-32 carried from block to
block, so each key costs its own block only), and two requests share their first `n` keys when
their prompts agree for `n` blocks: the next turn of a conversation repeats the previous turn's
prompt, and a shared system prompt opens many. Only whole blocks count, as in vLLM's own cache.

The prompt is read from the body as it came, from the `"messages"` key (a chat) or else the
`"prompt"` key (a completion) to the end: hashing the bytes costs no serialising of the parsed
messages again. One client serialises the messages it repeats the same way each turn, so their
bytes are a stable stand-in for the text; two clients that serialise a shared system prompt
differently (spaces, key order, escapes) do not share its blocks, and each conversation still
keeps to its replica. Every key is computed, in one pass: computing only those a lookup needs
(a few, for a repeated prompt) measured no faster here, the CRC of the bytes being most of it.

The keys fit in 52 bits, so that a double of the shared index holds one exactly: the CRC (seeded
with the route's key, so that routes do not share entries) and the block's number.
"""

from __future__ import annotations

import zlib

__all__ = ["BLOCK_BYTES", "MAX_BLOCKS", "prompt_chain", "route_seed"]

BLOCK_BYTES = 512
# Beyond this many blocks (64 KB) a prompt is told apart by its beginning: the hashing and the
# index's work stay bounded for huge prompts, and a long conversation still keeps to one replica.
MAX_BLOCKS = 128
_INDEX_BITS = 20


def route_seed(route_key: str) -> int:
    return zlib.crc32(route_key.encode())


def prompt_chain(body: bytes, seed: int) -> list[int]:
    """The chain of keys of the prompt in `body` (a JSON request), one per whole block; [] if none."""
    start = body.find(b'"messages"')
    if start < 0:
        start = body.find(b'"prompt"')
        if start < 0:
            return []
    end = min(len(body), start + BLOCK_BYTES * MAX_BLOCKS)
    crc32 = zlib.crc32
    crc, keys = seed, []
    for index, stop in enumerate(range(start + BLOCK_BYTES, end + 1, BLOCK_BYTES)):
        crc = crc32(body[stop - BLOCK_BYTES : stop], crc)  # a copy of 512 bytes costs less than a view
        keys.append(crc << _INDEX_BITS | index)
    return keys
