"""
The header parameters, the response headers, the security schemes and the tags of the document.

sanic-ext's response objects cannot carry headers, so `response_headers` says which documented
response has which, and gateway/api/openapi/builder.py attaches them when it finishes the document.
"""

from __future__ import annotations

from typing import Any

from gateway.api.openapi.schema import spec

__all__ = ["MODEL_KEY", "PUBLIC", "REQUEST_ID", "ROUTED_HEADERS", "SECURITY_SCHEMES", "response_headers"]

#: Accepted on every endpoint (`[A-Za-z0-9._:-]`, up to 128 characters; otherwise one is generated).
REQUEST_ID: dict[str, Any] = {
    "name": "X-Request-ID",
    "location": "header",
    "schema": str,
    "description": "Your id for this request, echoed in the `X-Request-ID` response header, sent upstream "
    "and logged. Up to 128 of `A-Z a-z 0-9 . _ : -`; otherwise the gateway generates one.",
}
#: Accepted by the endpoints that route to an upstream; a body's `modelKey` wins over it.
MODEL_KEY: dict[str, Any] = {
    "name": "X-Model-Key",
    "location": "header",
    "schema": str,
    "description": "The route (`MODEL_ROUTE_<KEY>`) to send the request to. Without it (and without a "
    "`modelKey` in an `/api` body) the route is the one whose vLLM lists the model, or `DEFAULT_MODEL_KEY`.",
}

#: The headers of the endpoints that route to an upstream (a list: what sanic-ext's signature takes).
ROUTED_HEADERS: list[Any] = [MODEL_KEY, REQUEST_ID]

# The response headers, as `#/components/headers/<name>`; `response_headers` says which response has which.
_RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's `X-Request-ID` if it was valid, else a generated one.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "X-RateLimit-Limit": {
        "description": "`RATE_LIMIT_PER_MIN` (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests this client may still send now (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the budget is full again (only when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {
        "description": "Seconds to wait before the next request.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": 'The scheme to authenticate with: `Bearer realm="gateway"`.',
        "required": True,
        "schema": {"type": "string"},
    },
    "x-should-retry": {
        "description": "`false` when no retry can help (`no_upstream_configured`); the OpenAI SDKs obey it.",
        "schema": {"type": "string", "enum": ["false"]},
    },
}
for _name, _header in _RESPONSE_HEADERS.items():
    spec.add_component("headers", _name, _header)
_RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_STATUS_HEADERS = {"401": ("WWW-Authenticate",), "429": ("Retry-After",), "502": ("x-should-retry",)}


def response_headers(status: str, rate_limited: bool) -> dict[str, dict[str, str]]:
    """The headers of one documented response (`status`: `"200"`, ..., `"default"`), as `$ref`s.

    Every answer has `X-Request-ID`; every answer of a rate-limited endpoint may have the
    `X-RateLimit-*` headers; a 401 has `WWW-Authenticate`, a 429 `Retry-After`, a 502 may have
    `x-should-retry`.
    """
    names = ["X-Request-ID", *(_RATE_HEADERS if rate_limited else ()), *_STATUS_HEADERS.get(status, ())]
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


#: The schemes, as alternatives: either header carries one of the keys of `API_KEY`.
SECURITY_SCHEMES = ("ApiKey", "Bearer")
spec.add_security_scheme(
    "ApiKey",
    "apiKey",
    location="header",
    name="X-API-Key",
    description="One of the comma-separated keys of `API_KEY`. Not needed when `API_KEY` is unset.",
)
spec.add_security_scheme(
    "Bearer",
    "http",
    scheme="bearer",
    description="`Authorization: Bearer <key>`, as OpenAI SDKs send it; same keys as `X-API-Key`.",
)
for _scheme in SECURITY_SCHEMES:  # the document-wide default: either scheme will do
    spec.secured(_scheme)
#: For `@openapi.secured(PUBLIC)`: the operation needs no key (an empty security requirement).
PUBLIC: dict[str, list[str]] = {}

for _tag, _description in (
    ("health", "Liveness; never needs a key nor counts against the rate limit."),
    ("models", "The models every route serves."),
    ("routes", "The routes and their replicas, as one worker sees them."),
    ("chat", "The gateway's own chat API: a `message` in, vLLM's chat completion out."),
    ("embeddings", "The gateway's own embeddings API."),
    ("openai", "The OpenAI-compatible surface (`base_url=http://HOST:PORT/v1`): bodies go upstream unchanged."),
    ("metrics", "Prometheus metrics, summed over all worker processes (absent when `PROMETHEUS_ENABLE=false`)."),
):
    spec.tag(_tag, _description)
