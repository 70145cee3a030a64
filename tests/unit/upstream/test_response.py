"""UpstreamResponse: the gateway's own response type, the same whichever transport carried it."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from gateway.upstream.response import ReadBody, UpstreamResponse


class Chunks:
    """A transport's body: raw chunks, and a record of how the connection was given up."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.closed = False
        self.released = False

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self.closed or not self.chunks:
            raise StopAsyncIteration
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True

    def release_if_read(self) -> bool:
        self.released = not self.chunks
        return self.released


def streamed(*chunks: bytes, encoding: bytes | None = None) -> tuple[UpstreamResponse, Chunks]:
    body = Chunks(*chunks)
    headers = [(b"Content-Type", b"text/event-stream"), (b"X-Dup", b"1"), (b"x-dup", b"2")]
    response = UpstreamResponse(200, headers, body, content_type="text/event-stream", content_encoding=encoding)
    return response, body


async def test_a_streamed_body_arrives_chunk_by_chunk_and_is_read_once() -> None:
    response, _ = streamed(b"data: 1\n\n", b"data: 2\n\n")
    assert [chunk async for chunk in response] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert response.is_closed
    assert await response.aread() == b""  # everything went to the iteration


async def test_aread_gathers_the_body_and_content_holds_it() -> None:
    response, _ = streamed(b"ab", b"cd")
    with pytest.raises(RuntimeError, match="aread"):
        response.content  # noqa: B018 - the property raises before the body is read
    assert await response.aread() == b"abcd" == response.content
    assert [chunk async for chunk in response] == []


async def test_a_whole_response_is_read_already_and_holds_no_connection() -> None:
    response = UpstreamResponse.whole(
        404, [(b"content-type", b"application/json")], b'{"e":1}', content_type="application/json"
    )
    assert response.content == b'{"e":1}' and response.status == 404
    assert response.release_if_read() and response.is_closed
    assert await response.aread() == b'{"e":1}'
    assert [chunk async for chunk in response] == []  # aread consumed it


def test_header_finds_the_first_value_in_any_case() -> None:
    response, _ = streamed()
    assert response.header("x-DUP") == "1"
    assert response.header("content-type") == response.content_type == "text/event-stream"
    assert response.header("x-missing") is None
    assert response.headers[1:] == [(b"X-Dup", b"1"), (b"x-dup", b"2")]  # as received, repeats kept


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"identity", lambda data: data),
    ],
)
async def test_a_compressed_body_is_decoded_across_chunks(encoding: bytes, compress: object) -> None:
    packed = compress(b'{"packed":' + b"1" * 5000 + b"}")  # type: ignore[operator]
    parts = [packed[i : i + 7] for i in range(0, len(packed), 7)]
    response, _ = streamed(*parts, encoding=encoding)
    assert await response.aread() == b'{"packed":' + b"1" * 5000 + b"}"


async def test_a_corrupt_compressed_body_is_a_decoding_error_that_closes_the_connection() -> None:
    response, body = streamed(b"not gzip at all", encoding=b"gzip")
    with pytest.raises(httpx.DecodingError):
        await response.aread()
    assert body.closed and response.is_closed


async def test_closing_early_closes_the_body_and_release_tells_whether_it_was_all_read() -> None:
    response, body = streamed(b"1", b"2")
    assert not response.release_if_read() and not response.is_closed
    assert await anext(aiter(response)) == b"1"
    await response.aclose()
    assert body.closed and response.is_closed


async def test_a_read_body_yields_its_content_once() -> None:
    body = ReadBody(b"all")
    assert [chunk async for chunk in body] == [b"all"]
    assert [chunk async for chunk in body] == []
    assert body.release_if_read()
