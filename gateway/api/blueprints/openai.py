"""The OpenAI-compatible surface: bodies go upstream exactly as the client sent them."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers, schema
from gateway.api.payloads import OpenAIBody, OpenAIChatRequest, OpenAICompletionRequest, OpenAIEmbeddingsRequest

bp = Blueprint("openai", url_prefix="/v1")
_SENT_AS_IS = "Sent upstream byte for byte."


@bp.get("/models")
@openapi.definition(
    operation="listModels",
    parameter=headers.REQUEST_ID,
    response=[answers.OPENAI_MODEL_LIST, *errors.OPENAI_LISTING_ERRORS],
)
async def models(request: Request) -> HTTPResponse:
    """List models: every route's, each once, as OpenAI's `GET /models`."""
    return json(await request.app.ctx.services.catalogue.openai_models())


async def _forward(request: Request, endpoint: str) -> HTTPResponse | None:
    payload = OpenAIBody.parse(request.body)
    proxy = request.app.ctx.services.proxy
    relay = proxy.stream if payload.stream else proxy.complete
    return await relay(
        request,
        endpoint,
        request.body,
        model_key=request.headers.get("x-model-key") or None,
        model=payload.model,
        user=payload.user,
    )


@bp.post("/chat/completions")
@openapi.definition(
    operation="createChatCompletion",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.CHAT_COMPLETION_OR_STREAM, *errors.OPENAI_ROUTED_ERRORS],
)
@schema.request_body(OpenAIChatRequest, _SENT_AS_IS)
async def chat_completions(request: Request) -> HTTPResponse | None:
    """Chat completion (OpenAI), as JSON or, with `stream: true`, as server-sent events."""
    return await _forward(request, "/chat/completions")


@bp.post("/completions")
@openapi.definition(
    operation="createCompletion",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.COMPLETION_OR_STREAM, *errors.OPENAI_ROUTED_ERRORS],
)
@schema.request_body(OpenAICompletionRequest, _SENT_AS_IS)
async def completions(request: Request) -> HTTPResponse | None:
    """Text completion (OpenAI, legacy), as JSON or, with `stream: true`, as server-sent events."""
    return await _forward(request, "/completions")


@bp.post("/embeddings")
@openapi.definition(
    operation="createEmbedding",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.EMBEDDINGS, *errors.OPENAI_ROUTED_ERRORS],
)
@schema.request_body(OpenAIEmbeddingsRequest, _SENT_AS_IS)
async def embeddings(request: Request) -> HTTPResponse | None:
    """Embeddings (OpenAI)."""
    return await _forward(request, "/embeddings")
