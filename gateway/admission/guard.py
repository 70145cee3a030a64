"""
Admission of a request before its handler runs: the rate limit, then the API key.

The limit comes first so that guessing keys costs budget too. `/health` is never limited nor
authenticated; `/metrics` is not limited and needs a key unless `METRICS_PUBLIC=true`; CORS
preflights (OPTIONS) and the API docs pass freely. So does Sanic's stand-in for a request whose
head could not be read (method `NONE`: a head that timed out, was too large or malformed): it has
no headers to admit, and the 408, 413 or 400 that Sanic answers for it is the answer to send.
"""

from __future__ import annotations

from sanic import Request

from gateway.admission.auth import ApiKeyAuth
from gateway.admission.client_ip import ClientIP
from gateway.admission.ratelimit import Limiter
from gateway.errors import RateLimited
from gateway.observability.metrics import metrics
from gateway.settings import Settings

__all__ = ["Guard"]

_UNLIMITED = frozenset({"/health", "/metrics"})
_DOCS_PREFIX = "/docs"
# What Sanic's `create_empty_request` names the request it makes up to report a broken head.
_NO_REQUEST = "NONE"


class Guard:
    def __init__(self, settings: Settings, limiter: Limiter | None, client_ip: ClientIP) -> None:
        self._limiter = limiter
        self._client_ip = client_ip
        self._auth = ApiKeyAuth(settings.api_keys) if settings.auth_enabled else None
        self._open = frozenset({"/health", "/metrics"} if settings.metrics_public else {"/health"})

    async def admit(self, request: Request) -> None:
        """Raise 429 or 401 for a request that may not proceed."""
        request.ctx.client_ip = self._client_ip.of(request)
        path = request.path
        if request.method in ("OPTIONS", _NO_REQUEST) or path.startswith(_DOCS_PREFIX):
            return
        if self._limiter is not None and path not in _UNLIMITED:
            decision = await self._limiter.hit(request.ctx.client_ip)
            request.ctx.rate = decision
            if not decision.allowed:
                metrics.rate_limited.inc()
                raise RateLimited(
                    f"rate limit of {decision.limit} requests per minute exceeded; retry in {decision.headers()['retry-after']} s",
                    headers=decision.headers(),
                )
        if self._auth is not None and path not in self._open:
            self._auth.check(request)
