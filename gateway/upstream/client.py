"""
The worker's client for the vLLM servers, and the mapping of transport failures to gateway
errors.

One `Upstream` per worker, created when the worker starts and closed when it stops. It speaks to
the seam of gateway/upstream/base.py: `FastTransport` by default, or any httpx transport (a
test's `httpx.MockTransport`) through `HttpxTransport`. URLs are parsed once into `Target`s and
the settings' timeouts once into `Timeouts`: connect, read (between two reads, so a long
generation that keeps producing is never cut) and write; the total deadline is the caller's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Coroutine
from typing import Any

import httpx
import orjson

from gateway.errors import GatewayError, UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from gateway.routing.models_cache import ModelList
from gateway.settings import Settings
from gateway.upstream.base import Target, Timeouts, Transport
from gateway.upstream.httpx_transport import HttpxTransport
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.transport import FastTransport

__all__ = ["Upstream", "close_after_end", "close_response", "map_transport_error"]

# Compressed upstream bodies would only cost a decompression before we relay them.
_BASE_HEADERS = [(b"accept-encoding", b"identity"), (b"user-agent", b"vllm-gateway")]
_POST_HEADERS = [*_BASE_HEADERS, (b"content-type", b"application/json")]
_STREAM_HEADERS = [*_POST_HEADERS, (b"accept", b"text/event-stream")]
KEEPALIVE_EXPIRY_SECONDS = 4.0
# `/models` listings feed routing decisions; a slow one must not hold requests for long.
MODELS_READ_TIMEOUT_SECONDS = 10.0


# Closes in progress; kept referenced so that the event loop does not drop them half-way.
_closing: set[asyncio.Task[None]] = set()


def _in_background(closing: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.ensure_future(closing)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    return task


async def _read_then_close(response: UpstreamResponse, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            async for _ in response:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await response.aclose()


def close_after_end(response: UpstreamResponse, within: float) -> None:
    """Read the rest of `response` in the background (at most `within` seconds), then close it.

    A body read to its end gives its connection back to the pool; one closed before costs the
    next request a new connection. Meant for what follows a stream's [DONE] (vLLM writes the end
    of the chunked body apart): the handler returns at once, and a client that hangs up as soon
    as it has [DONE] cannot cut the read short. When the end came with [DONE], as it mostly does,
    the connection goes back at once, without a task.
    """
    if not response.release_if_read():
        _in_background(_read_then_close(response, within))


async def close_response(response: UpstreamResponse) -> None:
    """Close `response`, and with it an unread upstream connection, even if we are cancelled.

    Closing the connection is what makes vLLM abort a generation, so it must not be skipped.
    When a client hangs up, Sanic may cancel the handler a second time while its cleanup runs;
    so the close runs in a task of its own, and a cancellation interrupts only the wait for it.
    """
    await asyncio.shield(_in_background(response.aclose()))


def map_transport_error(exc: Exception, route_key: str) -> GatewayError:
    """The gateway error for a transport failure (httpx's exceptions) while talking to `route_key`."""
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        phases: dict[type[Exception], str] = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for",
            httpx.WriteTimeout: "sending to",
            httpx.PoolTimeout: "waiting for a connection to",
        }
        phase = phases.get(type(exc), "waiting for")
        return UpstreamTimeout(f"timed out {phase} the upstream of route {route_key!r}")
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return UpstreamUnavailable(f"the upstream of route {route_key!r} is unreachable ({_reason(exc)})")
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamProtocolError(f"the upstream of route {route_key!r} broke the connection ({_reason(exc)})")
    return UpstreamError(f"the upstream of route {route_key!r} failed ({_reason(exc)})")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Upstream:
    """The worker's client for the vLLM servers: relayed POSTs, model lists and health probes.

    The HTTP/1.1 work is `FastTransport`'s (gateway/upstream/transport.py): no cap on connections
    (every open stream holds one), idle ones kept for reuse. Transport errors (httpx's exception
    classes) leave `post` and `open_stream` as they are: whether a failure is retried on another
    replica, answered as JSON or sent in-band is decided by their callers.
    """

    def __init__(self, settings: Settings, transport: Transport | httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        if transport is None:
            # vLLM's server drops idle connections after 5 s: give them up a little earlier.
            transport = FastTransport(max_keepalive=1024, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
        elif isinstance(transport, httpx.AsyncBaseTransport):
            transport = HttpxTransport(transport)
        self.transport: Transport = transport
        self.timeouts = Timeouts(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.write_timeout_seconds,
        )
        self._models_timeouts = Timeouts(
            connect=settings.connect_timeout_seconds,
            read=min(settings.read_timeout_seconds, MODELS_READ_TIMEOUT_SECONDS),
            write=settings.write_timeout_seconds,
        )
        self._targets: dict[str, Target] = {}  # replica URL + endpoint: a handful per route
        # vLLM uses X-Request-ID as its own request id, so each upstream attempt gets a unique
        # one: the client's id, then this worker's pid and a counter.
        self._attempt_prefix = f"{os.getpid():x}"
        self._attempts = itertools.count(1)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def attempt_id(self, request_id: str) -> str:
        """The X-Request-ID of one attempt at `request_id` (unique: vLLM refuses a duplicate)."""
        return f"{request_id}-{self._attempt_prefix}{next(self._attempts):x}"

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.parse(url)
        return target

    async def post(self, url: str, body: bytes, request_id: str) -> UpstreamResponse:
        """POST a JSON body and read the whole answer, whatever its status."""
        headers = [*_POST_HEADERS, (b"x-request-id", request_id.encode())]
        return await self._read("POST", url, headers, body, self.timeouts)

    async def open_stream(self, url: str, body: bytes, request_id: str) -> UpstreamResponse:
        """POST and return the response as soon as its headers arrived, body unread."""
        headers = [*_STREAM_HEADERS, (b"x-request-id", request_id.encode())]
        return await self.transport.send("POST", self._target(url), headers, body, self.timeouts)

    async def _read(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None, timeouts: Timeouts
    ) -> UpstreamResponse:
        response = await self.transport.send(method, self._target(url), headers, body, timeouts)
        try:
            await response.aread()
        except BaseException:
            _in_background(response.aclose())
            raise
        return response

    async def get(self, url: str, timeout_seconds: float) -> UpstreamResponse:
        """GET `url` and read the answer, all within `timeout_seconds`.

        The transport's timeouts are per phase; this needs one deadline for all of them."""
        timeouts = Timeouts(connect=timeout_seconds, read=timeout_seconds, write=timeout_seconds)
        async with asyncio.timeout(timeout_seconds):
            return await self._read("GET", url, _BASE_HEADERS, None, timeouts)

    async def list_models(self, url: str) -> ModelList | None:
        """GET `{url}/models`; None if the upstream is down or answers with something unusable."""
        started = time.perf_counter()
        try:
            response = await self._read("GET", f"{url}/models", _BASE_HEADERS, None, self._models_timeouts)
            if response.status != 200:
                return None
            data = orjson.loads(response.content)["data"]
        except (httpx.HTTPError, ValueError, orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(data, list) or not all(isinstance(item, dict) and "id" in item for item in data):
            return None
        return ModelList(models=tuple(data), latency_ms=round((time.perf_counter() - started) * 1000))

    async def is_up(self, url: str) -> bool:
        return await self.probe(url, self.settings.health_timeout_seconds) == "ok"

    async def probe(self, url: str, timeout_seconds: float) -> str:
        """`/health`'s view of one upstream: "ok", "unavailable" or "unknown"."""
        try:
            response = await self.get(f"{url}/models", timeout_seconds)
        except (httpx.HTTPError, TimeoutError, ValueError):
            return "unavailable"
        if response.status == 200:
            return "ok"
        return "unavailable" if response.status >= 500 else "unknown"
