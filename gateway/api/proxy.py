"""
The service behind the blueprints: route a request, send it to a replica (failing over to
another when one fails), and relay the answer — as JSON, or as a stream of server-sent events.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import orjson
from sanic import HTTPResponse, Request

from gateway.errors import GatewayError, UpstreamTimeout
from gateway.http.responses import Response
from gateway.observability.access import CLIENT_CLOSED, record_request
from gateway.observability.metrics import StreamMetrics, metrics
from gateway.routing.dispatch import Dispatch
from gateway.routing.replicas import Route
from gateway.routing.router import Router
from gateway.settings import Settings
from gateway.upstream.client import Upstream
from gateway.upstream.sse import StreamRelay

__all__ = ["Proxy"]


class Proxy:
    def __init__(self, settings: Settings, router: Router, upstream: Upstream) -> None:
        self.settings = settings
        self.router = router
        self.upstream = upstream
        self.streams: set[StreamRelay] = set()

    async def _route(self, request: Request, model_key: str | None, model: str | None) -> Route:
        try:
            route = await self.router.resolve(model_key, model)
        except asyncio.CancelledError:
            record_request(request, CLIENT_CLOSED)
            raise
        request.ctx.route_key = route.key
        request.ctx.model = model or self.settings.default_model_name
        return route

    def _dispatch(self, request: Request, route: Route, user: str | None, body: bytes) -> Dispatch:
        policy, affinity = route.policy, None
        if len(route.replicas) > 1:  # else there is nothing to choose
            session = None
            if policy.uses_session:  # the header wins over the body's `user`
                session = request.headers.get(self.settings.session_header) or user or None
            affinity = policy.affinity(session, body)
        return Dispatch(route, self.upstream, self.settings.upstream_max_attempts, affinity)

    async def complete(
        self, request: Request, endpoint: str, body: bytes, *, model_key: str | None, model: str | None,
        user: str | None = None,
    ) -> HTTPResponse:  # fmt: skip
        """Forward a non-streaming request; the upstream's status and body come back unchanged."""
        route = await self._route(request, model_key, model)
        dispatch = self._dispatch(request, route, user, body)
        started = time.perf_counter()
        sending = dispatch.post(endpoint, body, request.ctx.request_id)
        try:
            if self.settings.total_timeout_seconds is None:
                upstream = await sending
            else:
                async with asyncio.timeout(self.settings.total_timeout_seconds):
                    upstream = await sending
        except TimeoutError:
            metrics.count_upstream_error(route.key, "timeout")
            raise UpstreamTimeout(f"route {route.key!r} did not answer within TOTAL_TIMEOUT_SECONDS") from None
        except GatewayError as error:
            metrics.count_upstream_error(route.key, error)
            raise
        except asyncio.CancelledError:
            record_request(request, CLIENT_CLOSED)
            raise
        finally:
            dispatch.release()
        status = request.ctx.upstream_status = upstream.status
        model_label = (request.ctx.model or "") if status < 400 else ""
        metrics.upstream_duration_for(route.key, model_label).observe(time.perf_counter() - started)
        if status == 200:
            metrics.count_tokens(route.key, model_label, upstream.content)
        elif status >= 500:
            metrics.count_upstream_error(route.key, status)
        return Response(upstream.content, status=status, content_type=upstream.content_type or "application/json")

    async def stream(
        self, request: Request, endpoint: str, body: bytes, *, model_key: str | None, model: str | None,
        user: str | None = None,
    ) -> HTTPResponse | None:  # fmt: skip
        """Relay a streaming request as SSE; returns a response only if the stream never started."""
        route = await self._route(request, model_key, model)
        dispatch = self._dispatch(request, route, user, body)
        ctx = request.ctx
        model_label = ctx.model or ""
        relay = StreamRelay(
            request,
            route.key,
            functools.partial(dispatch.open_stream, endpoint, body, ctx.request_id),
            heartbeat_seconds=self.settings.sse_heartbeat_seconds,
            total_timeout_seconds=self.settings.total_timeout_seconds,
            observer=StreamMetrics(route.key, model_label, ctx.started),
        )
        ctx.streaming = True  # the response middleware runs when the stream starts
        self.streams.add(relay)
        metrics.active_streams.inc()
        started = time.perf_counter()
        try:
            return await relay.run()
        except GatewayError as error:
            relay.error = error
            raise
        except asyncio.CancelledError:
            if not relay.ended:  # the client hung up before the end: logged and counted as 499
                record_request(request, CLIENT_CLOSED)
            raise
        finally:
            dispatch.release()
            metrics.active_streams.dec()
            self.streams.discard(relay)
            ctx.upstream_status = relay.upstream_status
            ctx.streaming = relay.started
            if relay.error is not None:
                ctx.error = relay.error.code
                metrics.count_upstream_error(route.key, relay.error)
            elif relay.upstream_status is not None and relay.upstream_status >= 500:
                metrics.count_upstream_error(route.key, relay.upstream_status)
            metrics.upstream_duration_for(route.key, model_label if relay.started else "").observe(
                time.perf_counter() - started
            )
            if relay.started:
                record_request(request, 200)

    def end_streams_after(self, seconds: float) -> asyncio.Task[None]:
        """At shutdown: streams still running after `seconds` end with an in-band error."""

        async def deadline() -> None:
            await asyncio.sleep(seconds)
            for relay in list(self.streams):
                relay.shutdown()

        return asyncio.ensure_future(deadline())

    def api_body(self, fields: dict[str, Any]) -> bytes:
        """Serialise an `/api` body, naming `DEFAULT_MODEL_NAME` when the client named no model."""
        if "model" not in fields and self.settings.default_model_name:
            fields = {**fields, "model": self.settings.default_model_name}
        return orjson.dumps(fields)
