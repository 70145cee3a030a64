from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers, schema
from gateway.api.payloads import ApiChat, ApiChatRequest

bp = Blueprint("chat", url_prefix="/api")
_CHAT_BODY = "A chat message: `message` (or `messages`) is required."


async def _chat(request: Request, *, stream: bool) -> HTTPResponse | None:
    proxy = request.app.ctx.services.proxy
    payload = ApiChat.parse(request.body, request.headers.get("x-model-key"), stream=stream)
    relay = proxy.stream if stream else proxy.complete
    body = proxy.api_body(payload.upstream_body)
    return await relay(
        request, "/chat/completions", body, model_key=payload.model_key, model=payload.model, user=payload.user
    )


@bp.post("/chat")
@openapi.definition(
    operation="apiChat",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.CHAT_COMPLETION, *errors.API_ROUTED_ERRORS],
)
@schema.request_body(ApiChatRequest, _CHAT_BODY)
async def chat(request: Request) -> HTTPResponse | None:
    """One chat completion; the upstream's JSON comes back unchanged."""
    return await _chat(request, stream=False)


@bp.post("/chat/stream")
@openapi.definition(
    operation="apiChatStream",
    parameter=headers.ROUTED_HEADERS,
    response=[answers.CHAT_STREAM, *errors.API_ROUTED_ERRORS],
)
@schema.request_body(ApiChatRequest, _CHAT_BODY)
async def chat_stream(request: Request) -> HTTPResponse | None:
    """The same chat, as server-sent events with heartbeats, ending with `data: [DONE]`."""
    return await _chat(request, stream=True)
