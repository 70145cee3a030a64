"""Checking a body: what is not a JSON object is refused, saying why."""

from __future__ import annotations

import pytest

from gateway.api.checking import parse_object
from gateway.errors import BadRequest


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
    ],
)
def test_parse_object_rejects_what_is_not_an_object(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_object(body)
