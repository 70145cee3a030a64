"""Thin HTTP handlers: each parses its request, calls the proxy service, and responds."""

from .chat import bp as chat
from .embeddings import bp as embeddings
from .health import bp as health
from .models import bp as models
from .openai import bp as openai

__all__ = ["chat", "embeddings", "health", "models", "openai", "all_blueprints"]

all_blueprints = (health, models, chat, embeddings, openai)
