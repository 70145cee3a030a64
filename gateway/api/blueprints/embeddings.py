from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers, schema
from gateway.api.payloads import ApiEmbeddings, ApiEmbeddingsRequest

bp = Blueprint("embeddings", url_prefix="/api")


@bp.post("/embeddings")
@openapi.definition(
    operation="apiEmbeddings",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.EMBEDDINGS, *errors.API_ROUTED_ERRORS],
)
@schema.request_body(ApiEmbeddingsRequest, "The input to embed.")
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
        user=payload.user,
    )
