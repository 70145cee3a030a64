from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from gateway.api.openapi import answers, errors, headers

bp = Blueprint("models", url_prefix="/api")


@bp.get("/models")
@openapi.definition(
    operation="listApiModels",
    parameter=headers.REQUEST_ID,
    response=[answers.API_MODEL_LIST, *errors.API_LISTING_ERRORS],
)
async def api_models(request: Request) -> HTTPResponse:
    """All routes' models, de-duplicated, with each source route and its listing latency."""
    return json(await request.app.ctx.services.catalogue.api_models())
