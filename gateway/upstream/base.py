"""
The transport seam: what the upstream client asks of whatever carries its requests.

    class Transport(Protocol):
        async def send(method, target, headers, body, timeouts) -> UpstreamResponse
        async def aclose() -> None

`FastTransport` (transport.py) is the gateway's own, for plain http; `HttpxTransport`
(httpx_transport.py) carries the same calls over any httpx transport: https, or a test's
`httpx.MockTransport`. URLs are parsed once into a `Target`, timeouts once into `Timeouts`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from gateway.upstream.response import UpstreamResponse

__all__ = ["RequestBody", "Target", "Timeouts", "Transport"]

# A body known whole (sent with a Content-Length), or parts sent chunked as they come.
RequestBody = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True, slots=True)
class Target:
    """One URL, parsed once: where to connect and what to put in the request line."""

    url: str
    scheme: str
    host: str
    port: int
    netloc: bytes  # the Host header
    path: bytes  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"not an absolute URL: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(
            url=url,
            scheme=parts.scheme,
            host=parts.hostname,
            port=parts.port or default_port,
            netloc=parts.netloc.rpartition("@")[2].encode("ascii"),
            path=path.encode("ascii"),
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds per phase, None for no limit: read is between two reads, so a long stream lives."""

    connect: float | None = None
    read: float | None = None
    write: float | None = None


class Transport(Protocol):
    async def send(
        self, method: str, target: Target, headers: list[tuple[bytes, bytes]], body: RequestBody, timeouts: Timeouts
    ) -> UpstreamResponse:
        """Send one request; the response comes back once its head has arrived, body unread
        unless it came with the head. `headers` are sent as given, after Host and before the
        body's framing (Content-Length or chunked)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...
