"""
CORS: the response headers that let pages of other origins call the gateway.

`ALLOW_ORIGINS` lists origins, or `*` for any. For every response (errors included):

- A request whose `Origin` is allowed gets `Access-Control-Allow-Origin` with that origin,
  `Vary: Origin` and `Access-Control-Expose-Headers` (the request id and the rate-limit
  headers). An origin that is not allowed gets no CORS header, and the browser hides the answer.
- A request without `Origin` (not from a page) gets `*` when any origin is allowed, else the one
  allowed origin; nothing when several are listed.
- A preflight (`OPTIONS` with `Access-Control-Request-Method`, answered 204 by sanic-ext's
  automatic OPTIONS route, without key or rate limit) also gets the route's methods, those of
  the asked headers that are allowed, and `Access-Control-Max-Age`. An `OPTIONS` without that
  header is no preflight and gets no CORS header.

Credentials (cookies) are not used: pages send their key in `Authorization`, which is allowed
explicitly because `*` would not cover it. This is what sanic-ext's CORS did for these settings;
built once here, it costs a few dictionary operations per response instead of a tenth of the
CPU of a relayed request.
"""

from __future__ import annotations

from collections.abc import Iterable

from sanic import HTTPResponse, Request
from sanic.compat import Header

__all__ = ["ALLOW_HEADERS", "EXPOSE_HEADERS", "MAX_AGE_SECONDS", "CorsPolicy"]

# Headers browsers may send and read across origins.
ALLOW_HEADERS = ("authorization", "content-type", "x-api-key", "x-request-id", "x-model-key")
EXPOSE_HEADERS = ("x-request-id", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
MAX_AGE_SECONDS = 600


class CorsPolicy:
    def __init__(
        self,
        allow_origins: Iterable[str],
        allow_headers: Iterable[str] = ALLOW_HEADERS,
        expose_headers: Iterable[str] = EXPOSE_HEADERS,
        max_age_seconds: int = MAX_AGE_SECONDS,
    ) -> None:
        origins = [origin.strip() for origin in allow_origins if origin.strip()]
        self._any_origin = "*" in origins
        self._origins = frozenset(origins) - {"*"}
        # Without an Origin header: `*`, or the one allowed origin, or nothing.
        single = next(iter(self._origins)) if len(self._origins) == 1 else None
        self._without_origin = "*" if self._any_origin else single
        self._allow_headers = frozenset(header.lower() for header in allow_headers)
        self._expose = ",".join(header.lower() for header in expose_headers)
        self._max_age = str(max_age_seconds)

    def apply(self, request: Request, response: HTTPResponse) -> None:
        """Add the CORS headers that `request` calls for to `response`."""
        request_headers = request.headers
        preflight = request.method == "OPTIONS"
        if preflight and not request_headers.get("access-control-request-method"):
            return
        origin = request_headers.get("origin")
        if origin:
            if not self._any_origin and origin not in self._origins:
                return
        else:
            origin = self._without_origin
            if origin is None:
                return
        headers = response.headers
        headers["access-control-allow-origin"] = origin
        headers["access-control-expose-headers"] = self._expose
        if origin != "*":
            headers["vary"] = "origin"
        if preflight:
            self._add_preflight_headers(request, headers)

    def _add_preflight_headers(self, request: Request, headers: Header) -> None:
        asked = request.headers.get("access-control-request-headers", "")
        allowed = [name for name in (part.strip().lower() for part in asked.split(",")) if name in self._allow_headers]
        if allowed:
            headers["access-control-allow-headers"] = ",".join(allowed)
        headers["access-control-max-age"] = self._max_age
        group = request.app.router.groups.get(request.route.segments) if request.route is not None else None
        if group is not None:
            headers["access-control-allow-methods"] = ",".join(sorted(method.upper() for method in group.methods))
