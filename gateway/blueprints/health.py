from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

bp = Blueprint("health")


@bp.get("/health")
async def health(request: Request) -> HTTPResponse:
    """Liveness of the gateway, and whether the default route's vLLM answers (within 2 s)."""
    return json(await request.app.ctx.proxy.health())
