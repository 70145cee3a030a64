from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from gateway.api import schemas as doc
from gateway.api.payloads import ApiEmbeddings

bp = Blueprint("embeddings", url_prefix="/api")


@bp.post("/embeddings")
@openapi.definition(
    operation="apiEmbeddings",
    parameter=doc.ROUTED_HEADERS,
    response=[doc.EMBEDDINGS, *doc.API_ROUTED_ERRORS],
)
@doc.request_body(doc.API_EMBEDDINGS_BODY)
async def embeddings(request: Request) -> HTTPResponse:
    """Embeddings for `input`; the upstream's JSON comes back unchanged."""
    proxy = request.app.ctx.services.proxy
    payload = ApiEmbeddings.parse(request.body, request.headers.get("x-model-key"))
    return await proxy.complete(
        request,
        "/embeddings",
        proxy.api_body(payload.upstream_body),
        model_key=payload.model_key,
        model=payload.model,
    )
