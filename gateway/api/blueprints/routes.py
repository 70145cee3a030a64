from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers

bp = Blueprint("routes", url_prefix="/api")


@bp.get("/routes")
@openapi.definition(
    operation="listRoutes", parameter=headers.REQUEST_ID, response=[answers.ROUTE_STATUS, *errors.API_LISTING_ERRORS]
)
async def route_status(request: Request) -> HTTPResponse:
    """Every route and replica: state, requests in flight, recent latency, last error."""
    return json(request.app.ctx.services.catalogue.route_status())
