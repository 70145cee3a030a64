from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from ..payloads import ApiChat

bp = Blueprint("chat", url_prefix="/api")


@bp.post("/chat")
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
