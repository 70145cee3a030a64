"""
The API docs UI at `/docs`: Swagger UI, with every file served by the gateway itself.

sanic-ext's pages load their scripts from public CDNs, which leaves a blank page where a
self-hosted gateway usually runs (no way out to the internet). sanic-ext still serves the page
and the specification (`/docs/openapi.json`), but the page is `PAGE_TEMPLATE` (given to sanic-ext
as its one UI page, see `gateway.app`), and the scripts it loads come from the
`swagger-ui-bundle` package, under `/docs/assets/`. Nothing on the page leaves the gateway.
"""

from __future__ import annotations

from pathlib import Path

from sanic import Blueprint
from sanic_ext import openapi
from swagger_ui_bundle import swagger_ui_path

__all__ = ["PAGE_TEMPLATE", "bp"]

PAGE_TEMPLATE = Path(__file__).with_name("docs.html")

bp = Blueprint("docs_assets", url_prefix="/docs")
bp.static("/assets", str(swagger_ui_path), name="assets")
openapi.exclude(bp=bp)
