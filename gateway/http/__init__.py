"""Sanic's side of HTTP: the protocol, its config, the request and response classes, CORS."""
