"""The HTTP API: blueprints that parse and respond, the proxy and catalogue they call, the OpenAPI document."""
