"""The OpenAI-compatible surface: bodies go upstream exactly as the client sent them."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

from ..payloads import OpenAIBody

bp = Blueprint("openai", url_prefix="/v1")


@bp.get("/models")
async def models(request: Request) -> HTTPResponse:
    return json(await request.app.ctx.proxy.openai_models())


async def _forward(request: Request, endpoint: str) -> HTTPResponse | None:
    payload = OpenAIBody.parse(request.body)
    proxy = request.app.ctx.proxy
    relay = proxy.stream if payload.stream else proxy.complete
    return await relay(request, endpoint, request.body, model_key=request.headers.get("x-model-key"), model=payload.model)


@bp.post("/chat/completions")
async def chat_completions(request: Request) -> HTTPResponse | None:
    return await _forward(request, "/chat/completions")


@bp.post("/completions")
async def completions(request: Request) -> HTTPResponse | None:
    return await _forward(request, "/completions")


@bp.post("/embeddings")
async def embeddings(request: Request) -> HTTPResponse:
    return await _forward(request, "/embeddings")
