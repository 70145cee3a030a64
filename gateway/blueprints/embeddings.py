from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from ..payloads import ApiEmbeddings

bp = Blueprint("embeddings", url_prefix="/api")


@bp.post("/embeddings")
async def embeddings(request: Request) -> HTTPResponse:
    """Embeddings for `input`; the upstream's JSON comes back unchanged."""
    proxy = request.app.ctx.proxy
    payload = ApiEmbeddings.parse(request.body, request.headers.get("x-model-key"))
    return await proxy.complete(
        request,
        "/embeddings",
        proxy.api_body(payload.upstream_body),
        model_key=payload.model_key,
        model=payload.model,
    )
