"""The official openai SDK through the gateway."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.e2e.vllm import (
    EMBED_DIMS,
    FINGERPRINT,
    PETS,
    VLLM_CHAT,
    VLLM_EMBEDDINGS,
    post,
    vectors,
)
from tests.procs import Gateway

from .conftest import CHAT_MODEL, EMBED_MODEL

pytestmark = pytest.mark.e2e


def test_openai_sdk_through_the_gateway(gateway: Gateway) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60.0)
    try:
        assert {model.id for model in client.models.list()} == {CHAT_MODEL, EMBED_MODEL}

        messages = [{"role": "user", "content": "Say hello"}]
        sampling = {"max_tokens": 10, "temperature": 1.0, "seed": 11}
        expected = post(VLLM_CHAT, {"model": CHAT_MODEL, "messages": messages, **sampling}).json()
        expected_text = expected["choices"][0]["message"]["content"]
        completion = client.chat.completions.create(model=CHAT_MODEL, messages=messages, **sampling)
        assert completion.choices[0].message.content == expected_text
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 10
        assert FINGERPRINT.fullmatch(completion.system_fingerprint or "")

        stream = client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}, **sampling
        )
        chunks = list(stream)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == expected_text
        assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10

        # The SDK asks for base64 by default and decodes it; the vectors must equal vLLM's floats.
        direct = post(VLLM_EMBEDDINGS, {"model": EMBED_MODEL, "input": PETS}).json()
        embedded = client.embeddings.create(model=EMBED_MODEL, input=PETS)
        got = [list(map(float, item.embedding)) for item in embedded.data]
        assert [len(vector) for vector in got] == [EMBED_DIMS, EMBED_DIMS]
        assert got == vectors(direct)
    finally:
        client.close()
