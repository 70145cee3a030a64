"""The request bodies of the benchmarks: the same chat, as `/v1` and as the gateway's `/api` sends it."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from servers import MODEL

__all__ = ["PROMPT", "Target", "chat_targets", "dump"]

PROMPT = "Say hello in one short sentence."
# `--prompt-bytes`: a longer prompt (a system prompt of about that size before PROMPT), 0: none.
system_bytes = 0


class Target(NamedTuple):
    label: str
    direct_path: str
    direct_body: bytes
    path: str  # through the gateway
    body: bytes


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def chat_targets(stream: bool, **fake: Any) -> list[Target]:
    knobs = {"fake": fake} if fake else {}
    messages = [{"role": "user", "content": PROMPT}]
    if system_bytes:
        words = "You are a careful assistant who answers in one short sentence. "
        messages.insert(0, {"role": "system", "content": (words * (system_bytes // len(words) + 1))[:system_bytes]})
    v1 = dump({"model": MODEL, "messages": messages, "max_tokens": 2048, "stream": stream, **knobs})
    api_direct = dump({"messages": messages, "max_tokens": 2048, "stream": stream, **knobs})
    api = dump({"message": PROMPT, "max_tokens": 2048, **knobs})
    api_path = "/api/chat/stream" if stream else "/api/chat"
    return [Target("/v1/chat/completions", "/v1/chat/completions", v1, "/v1/chat/completions", v1),
            Target(api_path, "/v1/chat/completions", api_direct, api_path, api)]  # fmt: skip
