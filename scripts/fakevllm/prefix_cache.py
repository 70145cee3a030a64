"""vLLM's automatic prefix caching and its prefill, roughly: a chat template, blocks of tokens, an LRU of them.

A token is taken as 4 UTF-8 bytes of the prompt text, a block as 16 tokens (64 bytes). Block i is known by
a chain hash of the whole text up to its end, as vLLM hashes a block with its parent's hash. A request's
cached prefix is its leading blocks found in the LRU; once prefilled, the full blocks of its prompt and of
the reply the fake sends are cached, so that the next turn of a conversation finds both.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any

from fakevllm.common import PIECES, Knobs, Stats

BYTES_PER_TOKEN = 4
BLOCK_TOKENS = 16
BLOCK_BYTES = BYTES_PER_TOKEN * BLOCK_TOKENS
GENERATION_PROMPT = "<|assistant|>\n"


def content_text(content: Any) -> str:
    """A message's text: a string content, or the text parts of a list content, concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def chat_prompt(messages: list[Any]) -> str:
    """The prompt a chat template makes of the messages, with the generation prompt at its end."""
    turns = (f"<|{m.get('role')}|>\n{content_text(m.get('content'))}</s>\n" for m in messages if isinstance(m, dict))
    return "".join(turns) + GENERATION_PROMPT


def completion_prompt(prompt: Any) -> str:
    """/v1/completions: the prompt string; of a list, its first string (token ids: their repr)."""
    if isinstance(prompt, list):
        return prompt[0] if prompt and isinstance(prompt[0], str) else str(prompt)
    return str(prompt)


def prefill_on(knobs: Knobs) -> bool:
    return bool(knobs.prefill_base_seconds or knobs.prefill_seconds_per_token)


def wanted(knobs: Knobs) -> bool:
    """Whether the prompt text is needed at all: with no cache and no prefill time it is not built."""
    return bool(knobs.prefix_cache_blocks) or prefill_on(knobs)


class PrefixCache:
    """One server's cached blocks (least recently used first) and its prefill, one request at a time."""

    def __init__(self) -> None:
        self.blocks: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.lock = asyncio.Lock()  # one GPU's prefill
        self.waiting = 0  # requests waiting for the lock: in vllm:num_requests_waiting

    def clear(self) -> None:
        self.blocks.clear()

    @staticmethod
    def chain(data: bytes) -> list[bytes]:
        """The chain hash of each full block of `data`."""
        digest = hashlib.blake2b(digest_size=8)
        hashes = []
        for start in range(0, len(data) - BLOCK_BYTES + 1, BLOCK_BYTES):
            digest.update(data[start : start + BLOCK_BYTES])
            hashes.append(digest.digest())  # hashlib's digest() leaves the object open to more updates
        return hashes

    def lookup(self, hashes: list[bytes]) -> int:
        """How many leading blocks are cached; they become the most recently used."""
        blocks, found = self.blocks, 0
        for block in hashes:
            if block not in blocks:
                break
            blocks.move_to_end(block)
            found += 1
        return found

    def insert(self, hashes: list[bytes], capacity: int) -> None:
        blocks = self.blocks
        for block in hashes:
            if block in blocks:
                blocks.move_to_end(block)
            else:
                blocks[block] = None
        while len(blocks) > capacity:
            blocks.popitem(last=False)

    async def prefill(self, knobs: Knobs, stats: Stats, prompt: str, generated: int) -> None:
        """Look the prompt up and count it, take the prefill time, then cache the prompt and the reply.

        With a prefill time, requests take turns, and each looks up as its turn comes: one queued behind a
        request with the same prefix finds it. Cancelled (the client left) before the end, it caches nothing.
        """
        if not wanted(knobs):
            return
        data = prompt.encode()
        tokens, capacity, timed = max(1, len(data) // BYTES_PER_TOKEN), knobs.prefix_cache_blocks, prefill_on(knobs)
        hashes = self.chain(data + "".join(PIECES[:generated]).encode()) if capacity else []
        if timed:
            self.waiting += 1
            try:
                await self.lock.acquire()
            finally:
                self.waiting -= 1
        try:
            cached = 0
            if capacity:
                cached = min(self.lookup(hashes[: len(data) // BLOCK_BYTES]) * BLOCK_TOKENS, tokens)
                stats.prefix_cache_queries += tokens
                stats.prefix_cache_hits += cached
            if timed:
                await asyncio.sleep(knobs.prefill_base_seconds + (tokens - cached) * knobs.prefill_seconds_per_token)
            if capacity:
                self.insert(hashes, capacity)
        finally:
            if timed:
                self.lock.release()
