"""
The OpenAPI description of the HTTP surface (served at `/docs/openapi.json`, UI at `/docs`),
3.0.3 as sanic-ext emits it. Documentation only: nothing here runs per request.

    schema.py    pydantic models as component schemas, in OpenAPI 3.0's dialect
    answers.py   the documented answers: the gateway's own, and vLLM's, relayed
    errors.py    the error envelopes and the error responses of each kind of endpoint
    headers.py   header parameters, response headers, security schemes, tags
    builder.py   the document, built once per worker at start-up and served as bytes

The request bodies are documented by the models that check them (gateway/api/payloads.py), with
`request_body(Model, description)` on the handler.
The blueprints attach these pieces to their handlers with `@openapi.definition`.
"""
