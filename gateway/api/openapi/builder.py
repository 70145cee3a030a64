"""
The OpenAPI document at `/docs/openapi.json`: built once per worker at start-up, then served as bytes.

sanic-ext builds the document from the blueprints' declarations (`gateway.api.openapi`), and would
build it again for every request of it. Here it is built once, in a `before_server_start`
listener that runs after sanic-ext's own (which collects the operations), and finished with what
sanic-ext's declarations cannot say:

- this deployment's settings: without `API_KEY`, no operation needs a key nor answers 401; with
  `METRICS_PUBLIC=true`, `/metrics` needs none; without `RATE_LIMIT_PER_MIN`, nothing answers 429;
- response headers: sanic-ext's response objects drop a `headers` field, so each documented
  response gets the ones `gateway.api.openapi.headers.response_headers` names for its status. An operation
  is rate limited when it documents a 429 (the guard limits every endpoint but `/health`,
  `/metrics` and the docs, and those document none).

A request middleware bound to sanic-ext's document route answers with the finished bytes, so
sanic-ext's handler (and its per-request build) never runs once the worker has started.
"""

from __future__ import annotations

from typing import Any

import orjson
from sanic import HTTPResponse, Request, Sanic
from sanic_ext.config import PRIORITY as SANIC_EXT_PRIORITY
from sanic_ext.extensions.openapi.builders import SpecificationBuilder

from gateway.api.openapi.headers import response_headers
from gateway.settings import Settings

__all__ = ["build_document", "finish", "install"]

_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def install(app: Sanic) -> None:
    """Build the document when each worker starts, and serve it from then on."""
    # Listeners of a higher priority run first: this one after sanic-ext's `build_spec`.
    app.before_server_start(_build, priority=SANIC_EXT_PRIORITY - 1)
    app.register_named_middleware(_serve, [f"{app.name}.openapi.spec"])


def build_document(app: Sanic) -> dict[str, Any]:
    """The finished document, as a JSON-ready mapping (after sanic-ext's listener has run)."""
    return finish(SpecificationBuilder().build(app).serialize(), app.ctx.settings)


def finish(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Add what sanic-ext cannot declare to its serialised `document` (in place; returned)."""
    if not settings.auth_enabled:
        document.pop("security", None)
    for path, path_item in document.get("paths", {}).items():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.get("responses", {})
            if not settings.auth_enabled or (path == "/metrics" and settings.metrics_public):
                operation.pop("security", None)
                if settings.auth_enabled:
                    operation["security"] = [{}]  # this one, unlike the others, needs no key
                responses.pop("401", None)
            if not settings.rate_limit_per_min:
                responses.pop("429", None)
            rate_limited = "429" in responses
            for status, response in responses.items():
                response["headers"] = response_headers(status, rate_limited)
    return document


async def _build(app: Sanic) -> None:
    app.ctx.openapi_document = orjson.dumps(build_document(app))


async def _serve(request: Request) -> HTTPResponse | None:
    document: bytes | None = getattr(request.app.ctx, "openapi_document", None)
    if document is None:  # not built (yet): sanic-ext's handler answers
        return None
    return HTTPResponse(document, content_type="application/json")
