from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

bp = Blueprint("models", url_prefix="/api")


@bp.get("/models")
async def api_models(request: Request) -> HTTPResponse:
    """All routes' models, de-duplicated, with each source route and its listing latency."""
    return json(await request.app.ctx.proxy.api_models())
