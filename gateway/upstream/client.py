"""
The worker's connection pool to the vLLM servers, and the mapping of transport failures to
gateway errors.

One `httpx.AsyncClient` per worker, created when the worker starts and closed when it stops.
Its pool has no cap on connections, because every open stream holds one; idle connections are
kept for reuse. The four timeouts of the settings apply: connect, read (between two reads, so a
long generation that keeps producing is never cut), write, and an optional total deadline.
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
from gateway.upstream.transport import FastTransport, headers_from_triples, release_if_read

__all__ = ["Upstream", "close_after_end", "close_response", "map_transport_error"]

# Compressed upstream bodies would only cost a decompression before we relay them.
_BASE_HEADERS = {"accept-encoding": "identity", "user-agent": "vllm-gateway"}
_POST_HEADERS = [
    *((name.encode(), value.encode()) for name, value in _BASE_HEADERS.items()),
    (b"content-type", b"application/json"),
]
_STREAM_HEADERS = [*_POST_HEADERS, (b"accept", b"text/event-stream")]
# httpx.Headers' internal layout (0.28): (name as sent, lower-cased name, value).
_POST_TRIPLES = [(name, name.lower(), value) for name, value in _POST_HEADERS]
_STREAM_TRIPLES = [(name, name.lower(), value) for name, value in _STREAM_HEADERS]
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


def _close_in_background(response: httpx.Response) -> asyncio.Task[None]:
    return _in_background(response.aclose())


async def _read_then_close(response: httpx.Response, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            async for _ in response.stream:  # type: ignore[union-attr]
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await response.aclose()


def close_after_end(response: httpx.Response, within: float) -> None:
    """Read the rest of `response` in the background (at most `within` seconds), then close it.

    A body read to its end gives its connection back to the pool; one closed before costs the
    next request a new connection. Meant for what follows a stream's [DONE] (vLLM writes the end
    of the chunked body apart): the handler returns at once, and a client that hangs up as soon
    as it has [DONE] cannot cut the read short. When the end came with [DONE], as it mostly does,
    the connection goes back at once, without a task.
    """
    if not release_if_read(response):
        _in_background(_read_then_close(response, within))


async def close_response(response: httpx.Response) -> None:
    """Close `response`, and with it an unread upstream connection, even if we are cancelled.

    Closing the connection is what makes vLLM abort a generation, so it must not be skipped.
    When a client hangs up, Sanic may cancel the handler a second time while its cleanup runs;
    httpcore shields its own cleanup only from anyio cancellation, not from `Task.cancel()`.
    So the close runs in a task of its own, and a cancellation interrupts only the wait for it.
    """
    await asyncio.shield(_close_in_background(response))


def map_transport_error(exc: Exception, route_key: str) -> GatewayError:
    """The gateway error for an httpx failure while talking to `route_key`."""
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


def _public_post(
    url: httpx.URL, headers: list[tuple[bytes, bytes, bytes]], request_id: bytes, body: bytes,
    extensions: dict[str, Any],
) -> httpx.Request:  # fmt: skip
    pairs = [(name, value) for name, _, value in headers]
    pairs.append((b"x-request-id", request_id))
    return httpx.Request("POST", url, headers=pairs, content=body, extensions=extensions)


def _fast_post(
    url: httpx.URL, headers: list[tuple[bytes, bytes, bytes]], request_id: bytes, body: bytes,
    extensions: dict[str, Any],
) -> httpx.Request:  # fmt: skip
    """What `_public_post` builds, without httpx's normalisation of every header on every request."""
    request = _new_request(httpx.Request)
    request.method = "POST"
    request.url = url
    request.headers = headers_from_triples(
        [
            (b"Host", b"host", url.netloc),
            *headers,
            (b"x-request-id", b"x-request-id", request_id),
            (b"Content-Length", b"content-length", b"%d" % len(body)),
        ]
    )
    request.extensions = extensions  # one dict for every request: nothing on the path writes to it
    request.stream = httpx.ByteStream(body)
    request._content = body  # type: ignore[attr-defined]
    return request


def _fast_post_works() -> bool:
    """Whether `_fast_post` builds exactly what httpx's constructor does; checked once, at import."""
    url, body = httpx.URL("http://127.0.0.1:8000/v1/chat/completions"), b'{"a":1}'
    extensions: dict[str, Any] = {"timeout": {}}
    try:
        fast = _fast_post(url, _STREAM_TRIPLES, b"r-1", body, extensions)
        public = _public_post(url, _STREAM_TRIPLES, b"r-1", body, extensions)
        return (
            vars(fast).keys() == vars(public).keys()
            and vars(fast.headers).keys() == vars(public.headers).keys()
            and (fast.method, fast.url, fast.extensions, fast.content)
            == (public.method, public.url, public.extensions, public.content)
            and fast.headers.raw == public.headers.raw
            and fast.headers.multi_items() == public.headers.multi_items()
            and type(fast.stream) is type(public.stream)
            and list(fast.stream) == list(public.stream)  # type: ignore[call-overload,arg-type]
        )
    except Exception:  # noqa: BLE001  # pragma: no cover - another httpx
        return False


_new_request = httpx.Request.__new__
_build_post = _fast_post if _fast_post_works() else _public_post


class Upstream:
    """The worker's client for the vLLM servers.

    httpx is the client API; its HTTP/1.1 work is done by `FastTransport` (gateway/upstream/transport.py),
    which costs a third of httpcore's CPU per request and has no cap on connections. The request
    path also skips what httpx would redo per request for nothing: URLs are parsed once, and
    requests are built with raw header lists and a prepared timeout.
    """

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        # vLLM's server drops idle connections after 5 s: give them up a little earlier.
        self.transport = transport or FastTransport(max_keepalive=1024, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
        self.timeout = httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.write_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        )
        self.client = httpx.AsyncClient(
            timeout=self.timeout,
            follow_redirects=False,
            # Proxy variables must not send loopback vLLM traffic through a corporate proxy.
            trust_env=False,
            transport=self.transport,
        )
        self._extensions = {"timeout": self.timeout.as_dict()}
        self._urls: dict[str, httpx.URL] = {}  # replica URL + endpoint: a handful per route
        # vLLM uses X-Request-ID as its own request id, so each upstream attempt gets a unique
        # one: the client's id, then this worker's pid and a counter.
        self._attempt_prefix = f"{os.getpid():x}"
        self._attempts = itertools.count(1)
        self._models_timeout = httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=min(settings.read_timeout_seconds, MODELS_READ_TIMEOUT_SECONDS),
            write=settings.write_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def attempt_id(self, request_id: str) -> str:
        """The X-Request-ID of one attempt at `request_id` (unique: vLLM refuses a duplicate)."""
        return f"{request_id}-{self._attempt_prefix}{next(self._attempts):x}"

    # httpx errors leave `post` and `open_stream` as they are: whether a failure is retried on
    # another replica, answered as JSON or sent in-band is decided by their callers.

    def _post_request(
        self, url: str, body: bytes, request_id: str, headers: list[tuple[bytes, bytes, bytes]]
    ) -> httpx.Request:
        target = self._urls.get(url)
        if target is None:
            target = self._urls[url] = httpx.URL(url)
        return _build_post(target, headers, request_id.encode(), body, self._extensions)

    # The relayed requests go to the transport itself: `AsyncClient.send` would only add its
    # auth, redirect and cookie layers, none of which apply, at a tenth of the gateway's CPU.

    async def post(self, url: str, body: bytes, request_id: str) -> httpx.Response:
        """POST a JSON body and read the whole answer, whatever its status."""
        response = await self.transport.handle_async_request(self._post_request(url, body, request_id, _POST_TRIPLES))
        try:
            await response.aread()
        except BaseException:
            _close_in_background(response)
            raise
        return response

    async def open_stream(self, url: str, body: bytes, request_id: str) -> httpx.Response:
        """POST and return the response as soon as its headers arrived, body unread."""
        return await self.transport.handle_async_request(self._post_request(url, body, request_id, _STREAM_TRIPLES))

    async def list_models(self, url: str) -> ModelList | None:
        """GET `{url}/models`; None if the upstream is down or answers with something unusable."""
        started = time.perf_counter()
        try:
            response = await self.client.get(f"{url}/models", headers=_BASE_HEADERS, timeout=self._models_timeout)
            if response.status_code != 200:
                return None
            data = orjson.loads(response.content)["data"]
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(data, list) or not all(isinstance(item, dict) and "id" in item for item in data):
            return None
        return ModelList(models=tuple(data), latency_ms=round((time.perf_counter() - started) * 1000))

    async def is_up(self, url: str) -> bool:
        return await self.probe(url, self.settings.health_timeout_seconds) == "ok"

    async def probe(self, url: str, timeout_seconds: float) -> str:
        """`/health`'s view of one upstream: "ok", "unavailable" or "unknown"."""
        try:
            # httpx's timeouts are per phase; the probe needs one deadline for all of them.
            async with asyncio.timeout(timeout_seconds):
                response = await self.client.get(f"{url}/models", headers=_BASE_HEADERS, timeout=timeout_seconds)
        except (httpx.HTTPError, TimeoutError):
            return "unavailable"
        if response.status_code == 200:
            return "ok"
        return "unavailable" if response.status_code >= 500 else "unknown"
