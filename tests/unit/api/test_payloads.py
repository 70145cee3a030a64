from __future__ import annotations

import orjson
import pytest

from gateway.api.checking import check
from gateway.api.payloads import ApiChat, ApiEmbeddings, OpenAIBody, OpenAIRouting
from gateway.errors import BadRequest


def test_chat_builds_messages_from_system_and_message_and_keeps_extra_fields() -> None:
    chat = ApiChat.parse(
        b'{"message": "Hi", "system": "Be brief.", "model": "m", "modelKey": "k", "temperature": 1, "seed": 7}',
        None,
        stream=True,
    )
    assert (chat.model, chat.model_key) == ("m", "k")
    assert chat.upstream_body == {
        "model": "m",
        "temperature": 1,
        "seed": 7,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
    }


def test_chat_model_key_header_is_used_when_the_body_has_none() -> None:
    assert ApiChat.parse(b'{"message": "Hi"}', "tiny", stream=False).model_key == "tiny"
    assert ApiChat.parse(b'{"message": "Hi", "modelKey": "big"}', "tiny", stream=False).model_key == "big"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"model": "m"}', "'message' is required"),
        (b'{"message": 5}', "'message' must be a non-empty string, not a number"),
        (b'{"message": ""}', "'message' must be a non-empty string, not an empty one"),
        (b'{"message": "x", "temperature": "hot"}', "'temperature' must be a number, not a string"),
        (b'{"message": "x", "temperature": true}', "'temperature' must be a number, not a boolean"),
        (b'{"message": "x", "max_tokens": 1.5}', "'max_tokens' must be an integer, not a number"),
        (b'{"message": "x", "model": ["a"]}', "'model' must be a string, not an array"),
        (b'{"message": "x", "modelKey": 3}', "'modelKey' must be a string, not a number"),
        (b'{"message": "x", "system": {}}', "'system' must be a string, not an object"),
    ],
)
def test_chat_type_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        ApiChat.parse(body, None, stream=False)


def test_embeddings_accepts_a_string_or_a_list() -> None:
    assert ApiEmbeddings.parse(b'{"input": "a", "model": "e"}', None).upstream_body == {"input": "a", "model": "e"}
    assert ApiEmbeddings.parse(b'{"input": ["a", "b"], "modelKey": "k"}', None).upstream_body == {"input": ["a", "b"]}
    with pytest.raises(BadRequest, match="'input' is required"):
        ApiEmbeddings.parse(b"{}", None)
    with pytest.raises(BadRequest, match="'input' must be a string or an array, not a number"):
        ApiEmbeddings.parse(b'{"input": 1}', None)


def test_openai_body_reads_only_model_and_stream() -> None:
    assert OpenAIBody.parse(b'{"model": "m", "stream": true, "messages": []}') == OpenAIBody(model="m", stream=True)
    assert OpenAIBody.parse(b'{"messages": []}') == OpenAIBody(model=None, stream=False)
    with pytest.raises(BadRequest, match="'stream' must be a boolean"):
        OpenAIBody.parse(b'{"stream": "yes"}')


@pytest.mark.parametrize("model", [None, "m", 1, True, [], {}])
@pytest.mark.parametrize("stream", [None, True, False, 0, 1, "true", []])
@pytest.mark.parametrize("user", [None, "u-1", 7])
def test_the_inline_routing_read_agrees_with_the_model(model: object, stream: object, user: object) -> None:
    # OpenAIBody.parse tells the common case apart inline; OpenAIRouting decides the rest.
    data = {"model": model, "stream": stream, "user": user, "messages": []}
    try:
        routing = check(OpenAIRouting, data)
        expected: object = OpenAIBody(model=routing.model, stream=bool(routing.stream), user=routing.user)
    except BadRequest as exc:
        expected = exc.message
    try:
        got: object = OpenAIBody.parse(orjson.dumps(data))
    except BadRequest as exc:
        got = exc.message
    assert got == expected


def test_a_null_is_an_absent_field() -> None:
    chat = ApiChat.parse(b'{"message": "Hi", "model": null, "temperature": null, "messages": null}', None, stream=False)
    assert chat.model is None and chat.upstream_body["temperature"] is None  # passed on as it came
    with pytest.raises(BadRequest, match="'message' is required"):
        ApiChat.parse(b'{"message": null}', None, stream=False)
    with pytest.raises(BadRequest, match="'messages' must be a non-empty array, not an array"):
        ApiChat.parse(b'{"messages": []}', None, stream=False)
