from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from ..metrics import CONTENT_TYPE_LATEST, render

bp = Blueprint("metrics")


@bp.get("/metrics")
async def scrape(request: Request) -> HTTPResponse:
    """Prometheus text format, summed over every worker process."""
    return HTTPResponse(render(), content_type=CONTENT_TYPE_LATEST)
