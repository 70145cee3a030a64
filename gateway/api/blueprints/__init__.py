"""Thin HTTP handlers: each parses its request, calls the proxy service, and responds."""

from gateway.api.blueprints.chat import bp as chat
from gateway.api.blueprints.docs import bp as docs
from gateway.api.blueprints.embeddings import bp as embeddings
from gateway.api.blueprints.health import bp as health
from gateway.api.blueprints.metrics import bp as metrics
from gateway.api.blueprints.models import bp as models
from gateway.api.blueprints.openai import bp as openai
from gateway.api.blueprints.routes import bp as routes

__all__ = ["all_blueprints", "chat", "docs", "embeddings", "health", "metrics", "models", "openai", "routes"]

# /metrics is added separately, only when PROMETHEUS_ENABLE is true.
all_blueprints = (health, models, routes, chat, embeddings, openai, docs)
