"""
The SSE relay: upstream events to the client as they arrive, with heartbeats and in-band errors.

How one stream goes:

1. The upstream request is sent from the handler's own task, at once. If the response headers
   come within one heartbeat interval, an error status is relayed as a normal JSON response
   (status and body unchanged); a success starts the client's `text/event-stream` response,
   whose headers go out at once. If they do not come in time (slow prefill, a queue), a timer
   starts the client's stream anyway with a `: keepalive` comment, so that no client or proxy
   sees a silent connection; any error after that point is sent in-band.
2. Upstream bytes are forwarded as they arrive, whole events only (an event cut across two
   network reads waits for its end), never re-framed or parsed.
3. A timer sends `: keepalive` whenever nothing was written for `SSE_HEARTBEAT_SECONDS`: one
   timer per stream, checked lazily, so relaying a chunk costs nothing extra.
4. Failure after the start (upstream dropped, read timeout between chunks, the total deadline,
   shutdown): `event: error` with the JSON error envelope, then `data: [DONE]`, then the end.
   A stream ends with `data: [DONE]` exactly once.
5. After [DONE], the rest of the upstream body (the end of its chunked framing) is read, so
   that the connection goes back to the pool for the next request.
6. The client hanging up cancels the handler; leaving the upstream context closes the upstream
   connection at once, which makes vLLM abort the generation and free its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import orjson
from sanic import HTTPResponse, Request

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, error_body
from gateway.http.responses import Response
from gateway.upstream.client import close_after_end, close_response, map_transport_error
from gateway.upstream.response import UpstreamResponse

__all__ = ["SSE_HEADERS", "StreamObserver", "StreamRelay"]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
KEEPALIVE = b": keepalive\n\n"
DONE = b"data: [DONE]\n\n"
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")
# How long the end of an upstream body may lag behind its [DONE] before the connection is closed.
AFTER_DONE_SECONDS = 1.0


def _complete_events(buffer: bytes) -> int:
    """The length of the prefix of `buffer` that is made of whole SSE events."""
    end = 0
    for marker in _EVENT_ENDS:
        found = buffer.rfind(marker)
        if found >= 0:
            end = max(end, found + len(marker))
    return end


def in_band_error(error: GatewayError) -> bytes:
    return b"event: error\ndata: " + error.to_json() + b"\n\n" + DONE


def upstream_error_event(status: int, body: bytes, route_key: str) -> bytes:
    """An upstream error status met after the stream started, as an in-band error event."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return b"event: error\ndata: " + orjson.dumps(parsed) + b"\n\n" + DONE
    message = f"the upstream of route {route_key!r} answered HTTP {status}"
    return b"event: error\ndata: " + error_body(message, "upstream_error", f"upstream_http_{status}") + b"\n\n" + DONE


def _ends_with_done(events: bytes) -> bool:
    # The exact LF framing vLLM sends is checked first: it needs no copy of the events.
    return events.endswith(DONE) or events.rstrip().endswith(b"data: [DONE]")


class StreamObserver(Protocol):
    """Who hears what a stream reports while it runs (the metrics: `StreamMetrics`)."""

    def first_chunk(self) -> None:
        """The first upstream event has arrived."""

    def usage(self, events: bytes) -> None:
        """The events just before `[DONE]` hold vLLM's `usage`."""


class StreamRelay:
    """One client stream. `run()` returns a JSON response only when the stream never started."""

    def __init__(
        self,
        request: Request,
        route_key: str,
        opener: Callable[[], Awaitable[UpstreamResponse]],
        heartbeat_seconds: float,
        total_timeout_seconds: float | None,
        observer: StreamObserver | None = None,
    ) -> None:
        self.request = request
        self.route_key = route_key
        self._opener = opener
        self._heartbeat = heartbeat_seconds
        self._total = total_timeout_seconds
        self._observer = observer
        self.response: HTTPResponse | None = None
        self.upstream_status: int | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None  # the next heartbeat check
        self._beat: asyncio.Task[None] | None = None  # a keepalive (or the headers) being written
        self._writes = 0
        self._ended = False
        self._task: asyncio.Task[Any] | None = None
        self._shutting_down = False
        self._last_write = 0.0
        self.error: GatewayError | None = None  # what ended the stream in-band, if anything

    @property
    def started(self) -> bool:
        return self.response is not None

    @property
    def ended(self) -> bool:
        """The stream's end (`data: [DONE]`) was written: the client has all of it."""
        return self._ended

    def shutdown(self) -> None:
        """End the stream now with an in-band error (the server's graceful period is over)."""
        if self._task is not None and not self._task.done():
            self._shutting_down = True
            self._task.cancel()

    async def run(self) -> HTTPResponse | None:
        self._task = asyncio.current_task()
        upstream: UpstreamResponse | None = None
        try:
            async with asyncio.timeout(self._total):
                # The upstream request goes out from this task, at once: a task of its own would
                # queue it behind every other request that arrived in the same burst.
                early_start = self._loop.call_later(self._heartbeat, self._start_early)
                try:
                    upstream = await self._opener()
                except httpx.HTTPError as exc:
                    raise map_transport_error(exc, self.route_key) from exc
                finally:
                    early_start.cancel()
                await self._settle_beat()
                self.upstream_status = upstream.status
                content_type = upstream.content_type or ""
                if upstream.status != 200 or not content_type.startswith("text/event-stream"):
                    body = await upstream.aread()
                    if not self.started:
                        return Response(body, status=upstream.status, content_type=content_type or None)
                    await self._finish(upstream_error_event(upstream.status, body, self.route_key))
                    return None
                if not self.started:
                    await self._start()
                    # The headers leave with the first events when those are already here (one
                    # write instead of two), else as soon as the relay has to wait for them:
                    # never held back until the first token.
                    self._loop.call_soon(self._flush_headers_if_silent)
                if await self._relay(upstream):
                    close_after_end(upstream, AFTER_DONE_SECONDS)
                    upstream = None
        except GatewayError as error:
            await self._settle_beat()
            if not self.started:
                raise
            await self._fail(error)
        except TimeoutError:
            await self._settle_beat()
            timeout = UpstreamTimeout(f"the stream from route {self.route_key!r} exceeded TOTAL_TIMEOUT_SECONDS")
            if not self.started:
                raise timeout from None
            await self._fail(timeout)
        except asyncio.CancelledError:
            if not self._shutting_down:
                raise  # the client hung up: nothing more to send
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self._settle_beat()
            await self._fail(UpstreamError("the gateway is shutting down", code="shutting_down"))
        finally:
            self._stop_beats()
            if upstream is not None:
                await close_response(upstream)
        return None

    def _start_early(self) -> None:
        """The upstream's headers are late (a slow prefill, a queue): start the client's stream now."""
        if not self.started and self._beat is None:
            self._beat = self._loop.create_task(self._start_with_keepalive())

    async def _start_with_keepalive(self) -> None:
        await self._start()
        await self._write(KEEPALIVE)
        self._beat = None

    async def _settle_beat(self) -> None:
        """Let a write that a timer started (the early start, a keepalive) finish before ours."""
        if self._beat is not None:
            await asyncio.wait({self._beat})

    async def _start(self) -> None:
        self.response = await self.request.respond(
            Response(status=200, headers=SSE_HEADERS, content_type=SSE_CONTENT_TYPE)
        )
        self._last_write = self._loop.time()
        self._arm_heartbeat()

    def _flush_headers_if_silent(self) -> None:
        if self._writes == 0 and not self._ended and self._beat is None:
            self._beat = self._loop.create_task(self._flush_headers())

    async def _flush_headers(self) -> None:
        await self._write(b"")  # an empty chunk: Sanic sends the headers alone
        self._beat = None

    # Heartbeats: a timer per stream, not a task. It fires one interval after the last write
    # and only then, if the stream is still silent, starts a task to write the comment; a
    # stream that keeps producing never pays more than the timer.

    def _arm_heartbeat(self) -> None:
        self._timer = self._loop.call_at(self._last_write + self._heartbeat, self._heartbeat_due)

    def _heartbeat_due(self) -> None:
        if self._loop.time() - self._last_write >= self._heartbeat * 0.999 and self._beat is None:
            self._beat = self._loop.create_task(self._write_keepalive())
        else:
            self._arm_heartbeat()

    async def _write_keepalive(self) -> None:
        await self._write(KEEPALIVE)
        self._beat = None
        self._arm_heartbeat()

    def _stop_beats(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    async def _write(self, data: bytes) -> None:
        self._last_write = self._loop.time()
        self._writes += 1
        await self.response.send(data)  # type: ignore[union-attr]

    async def _fail(self, error: GatewayError) -> None:
        if self._ended:  # [DONE] went out already: nothing may follow it
            return
        self.error = error
        await self._finish(in_band_error(error))

    async def _finish(self, tail: bytes) -> None:
        self._stop_beats()  # no keepalive may follow the end of the stream
        self._ended = True
        if self.response is not None:
            await self.response.send(tail, end_stream=True)

    async def _relay(self, upstream: UpstreamResponse) -> bool:
        """Forward the events; True once [DONE] went out, with at most the body's end left to read."""
        pending = b""
        previous = b""
        first = True
        try:
            async for chunk in upstream:
                pending += chunk
                end = _complete_events(pending)
                if not end:
                    continue
                events, pending = pending[:end], pending[end:]
                if first:
                    first = False
                    if self._observer is not None:
                        self._observer.first_chunk()
                if _ends_with_done(events):
                    await self._finish(events)
                    self._report_usage(previous, events)
                    return True
                await self._write(events)
                previous = events
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self.route_key) from exc
        if pending.strip():
            raise UpstreamError(
                f"the stream from route {self.route_key!r} ended in the middle of an event",
                code="upstream_protocol_error",
            )
        # The upstream ended cleanly but without [DONE]; clients still get exactly one.
        await self._finish(DONE)
        return False

    def _report_usage(self, previous: bytes, last: bytes) -> None:
        """Pass on the events just before [DONE], where vLLM puts the usage (include_usage)."""
        if self._observer is None:
            return
        before = last[: last.rstrip().rfind(b"data: [DONE]")]
        candidate = before if before.strip() else previous
        if b'"usage"' in candidate:
            self._observer.usage(candidate)
