from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json
from sanic_ext import openapi

from gateway.api.openapi import answers, headers

bp = Blueprint("health")


@bp.get("/health")
@openapi.definition(operation="getHealth", parameter=headers.REQUEST_ID, response=answers.HEALTH)
@openapi.secured(headers.PUBLIC)  # no API key needed
async def health(request: Request) -> HTTPResponse:
    """Liveness of the gateway, and whether the default route's vLLM answers (within 2 s)."""
    return json(await request.app.ctx.services.catalogue.health())
