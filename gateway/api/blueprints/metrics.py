from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers
from gateway.observability.metrics import CONTENT_TYPE_LATEST, render

bp = Blueprint("metrics")


@bp.get("/metrics")
@openapi.definition(
    operation="getMetrics", parameter=headers.REQUEST_ID, response=[answers.METRICS_TEXT, *errors.METRICS_ERRORS]
)
async def scrape(request: Request) -> HTTPResponse:
    """Prometheus text format, summed over every worker process."""
    return HTTPResponse(render(), content_type=CONTENT_TYPE_LATEST)
