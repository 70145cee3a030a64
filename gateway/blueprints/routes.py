from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

bp = Blueprint("routes", url_prefix="/api")


@bp.get("/routes")
async def route_status(request: Request) -> HTTPResponse:
    """Every route and replica as the answering worker sees it: state, requests in flight,
    recent latency, last error."""
    return json(request.app.ctx.proxy.route_status())
