from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from .. import schemas as doc
from ..payloads import ApiChat

bp = Blueprint("chat", url_prefix="/api")


@bp.post("/chat")
@openapi.definition(
    body=doc.API_CHAT_BODY,
    parameter=doc.ROUTED_HEADERS,
    response=[doc.CHAT_COMPLETION, *doc.ROUTED_ERRORS],
)
async def chat(request: Request) -> HTTPResponse:
    """One chat completion; the upstream's JSON comes back unchanged."""
    proxy = request.app.ctx.proxy
    payload = ApiChat.parse(request.body, request.headers.get("x-model-key"), stream=False)
    return await proxy.complete(
        request,
        "/chat/completions",
        proxy.api_body(payload.upstream_body),
        model_key=payload.model_key,
        model=payload.model,
    )


@bp.post("/chat/stream")
@openapi.definition(
    body=doc.API_CHAT_BODY,
    parameter=doc.ROUTED_HEADERS,
    response=[doc.CHAT_STREAM, *doc.ROUTED_ERRORS],
)
async def chat_stream(request: Request) -> HTTPResponse | None:
    """The same chat, as server-sent events with heartbeats, ending with `data: [DONE]`."""
    proxy = request.app.ctx.proxy
    payload = ApiChat.parse(request.body, request.headers.get("x-model-key"), stream=True)
    return await proxy.stream(
        request,
        "/chat/completions",
        proxy.api_body(payload.upstream_body),
        model_key=payload.model_key,
        model=payload.model,
    )
