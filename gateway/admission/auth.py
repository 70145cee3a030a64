"""
API keys: `API_KEY` holds one or several comma-separated keys (several for rotation).

Clients send `X-API-Key: <key>` or `Authorization: Bearer <key>` (what the OpenAI SDKs send).
Every configured key is compared, each in constant time, so the time taken says nothing about
which key or how much of it matched.
"""

from __future__ import annotations

import hmac

from sanic import Request

from gateway.errors import Unauthorized

__all__ = ["ApiKeyAuth"]


class ApiKeyAuth:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @staticmethod
    def presented_key(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key:
            return key.strip()
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None

    def check(self, request: Request) -> None:
        """Raise 401 unless the request carries one of the keys."""
        presented = self.presented_key(request)
        if presented is None:
            raise Unauthorized(
                "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
                code="missing_api_key",
                headers={"www-authenticate": 'Bearer realm="gateway"'},
            )
        # Sanic decodes header bytes that are not UTF-8 as surrogates: encode them back as they came.
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise Unauthorized("invalid API key", headers={"www-authenticate": 'Bearer realm="gateway"'})
