"""A prompt's chain of block hashes: shared by prompts that agree, cheap to extend, bounded."""

from __future__ import annotations

import orjson

from gateway.routing.prompt_chain import BLOCK_BYTES, MAX_BLOCKS, prompt_chain, route_seed

SEED = route_seed("tiny")
SYSTEM = {"role": "system", "content": "You answer in French. " * 60}


def chat(*messages: dict[str, str], **fields: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": list(messages), **fields})


def test_the_next_turn_of_a_conversation_extends_the_chain_of_the_last() -> None:
    first = [SYSTEM, {"role": "user", "content": "Bonjour " * 100}]
    turn1 = prompt_chain(chat(*first, stream=True), SEED)
    later = [*first, {"role": "assistant", "content": "Salut " * 80}, {"role": "user", "content": "Et alors ?"}]
    turn2 = prompt_chain(chat(*later, max_tokens=9), SEED)
    assert len(turn1) >= 2 and len(turn2) > len(turn1)
    # The last block of turn 1 holds the end of its body (`]`, `"stream"`), which turn 2 does not repeat.
    assert turn2[: len(turn1) - 1] == turn1[:-1]


def test_prompts_that_share_a_system_prompt_share_its_blocks_only() -> None:
    one = prompt_chain(chat(SYSTEM, {"role": "user", "content": "a" * 2000}), SEED)
    two = prompt_chain(chat(SYSTEM, {"role": "user", "content": "b" * 2000}), SEED)
    shared = len(orjson.dumps(SYSTEM)) // BLOCK_BYTES
    assert shared >= 2 and one[:shared] == two[:shared] and not set(one[shared + 1 :]) & set(two)


def test_the_chain_depends_on_the_route_and_not_on_fields_before_the_prompt() -> None:
    body = chat(SYSTEM)
    assert prompt_chain(body, route_seed("other")) != prompt_chain(body, SEED)
    moved = orjson.dumps({"temperature": 0.5, "user": "x", "messages": [SYSTEM]})
    assert prompt_chain(moved, SEED)[:-1] == prompt_chain(body, SEED)[:-1]


def test_a_completion_prompt_counts_and_keys_fit_a_double() -> None:
    keys = prompt_chain(orjson.dumps({"model": "m", "prompt": "x" * 5000}), SEED)
    assert len(keys) == 9 and all(0 <= key < 2**52 for key in keys)


def test_no_prompt_or_a_short_one_gives_no_chain_and_a_huge_one_is_bounded() -> None:
    assert prompt_chain(orjson.dumps({"model": "m", "input": "x" * 5000}), SEED) == []
    assert prompt_chain(chat({"role": "user", "content": "hi"}), SEED) == []
    assert len(prompt_chain(chat({"role": "user", "content": "y" * 200_000}), SEED)) == MAX_BLOCKS
