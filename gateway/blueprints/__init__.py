"""Thin HTTP handlers: each parses its request, calls the proxy service, and responds."""

from .chat import bp as chat
from .docs import bp as docs
from .embeddings import bp as embeddings
from .health import bp as health
from .metrics import bp as metrics
from .models import bp as models
from .openai import bp as openai
from .routes import bp as routes

__all__ = ["all_blueprints", "chat", "docs", "embeddings", "health", "metrics", "models", "openai", "routes"]

# /metrics is added separately, only when PROMETHEUS_ENABLE is true.
all_blueprints = (health, models, routes, chat, embeddings, openai, docs)
