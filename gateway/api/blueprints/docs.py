"""
The API docs UI at `/docs`: Swagger UI, with every file served by the gateway itself.

sanic-ext's pages load their scripts from public CDNs, which leaves a blank page where a
self-hosted gateway usually runs (no way out to the internet). sanic-ext still serves the page
and the specification (`/docs/openapi.json`), but the page is `docs.html` beside this module
(its one UI page, through `UI_CONFIG`, at `/docs` and `/docs/ui`), and the scripts it loads come
from the `swagger-ui-bundle` package, under `/docs/assets/`. Nothing on the page leaves the
gateway.
"""

from __future__ import annotations

from pathlib import Path

from sanic import Blueprint
from sanic_ext import openapi
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from gateway import __version__

__all__ = ["UI_CONFIG", "bp"]

# sanic-ext's settings for its UI pages (its "redoc" page is the one it lets us give a template).
UI_CONFIG = {
    "OAS_UI_DEFAULT": "redoc",
    "OAS_UI_REDOC": True,
    "OAS_URI_TO_REDOC": "/ui",
    "OAS_PATH_TO_REDOC_HTML": str(Path(__file__).with_name("docs.html")),
    "OAS_UI_REDOC_HTML_TITLE": f"vLLM gateway {__version__}",
    "OAS_UI_SWAGGER": False,
}

bp = Blueprint("docs_assets", url_prefix="/docs")
bp.static("/assets", str(swagger_ui_path), name="assets")
openapi.exclude(bp=bp)
