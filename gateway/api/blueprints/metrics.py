from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from gateway.api import schemas as doc
from gateway.observability.metrics import CONTENT_TYPE_LATEST, render

bp = Blueprint("metrics")


@bp.get("/metrics")
@openapi.definition(operation="getMetrics", parameter=doc.REQUEST_ID, response=[doc.METRICS_TEXT, *doc.METRICS_ERRORS])
async def scrape(request: Request) -> HTTPResponse:
    """Prometheus text format, summed over every worker process."""
    return HTTPResponse(render(), content_type=CONTENT_TYPE_LATEST)
