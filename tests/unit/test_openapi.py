"""The OpenAPI document at /docs/openapi.json: every endpoint, its body, its errors, its headers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sanic import Sanic

ROUTED_ERRORS = {"400", "401", "403", "404", "409", "413", "429", "502", "504"}
LISTING_ERRORS = {"401", "429"}

# path -> method -> (request body schema or None, required body fields, error statuses)
ENDPOINTS: dict[str, dict[str, tuple[str | None, set[str], set[str]]]] = {
    "/health": {"get": (None, set(), set())},
    "/metrics": {"get": (None, set(), {"401"})},
    "/api/models": {"get": (None, set(), LISTING_ERRORS)},
    "/api/chat": {"post": ("ApiChatRequest", {"message"}, ROUTED_ERRORS)},
    "/api/chat/stream": {"post": ("ApiChatRequest", {"message"}, ROUTED_ERRORS)},
    "/api/embeddings": {"post": ("ApiEmbeddingsRequest", {"input"}, ROUTED_ERRORS)},
    "/v1/models": {"get": (None, set(), LISTING_ERRORS)},
    "/v1/chat/completions": {"post": ("OpenAIChatRequest", {"messages"}, ROUTED_ERRORS)},
    "/v1/completions": {"post": ("OpenAICompletionRequest", {"prompt"}, ROUTED_ERRORS)},
    "/v1/embeddings": {"post": ("OpenAIEmbeddingsRequest", {"input"}, ROUTED_ERRORS)},
}
OPERATIONS = [(path, method) for path, methods in ENDPOINTS.items() for method in methods]


@pytest.fixture
async def spec(make_app: Callable[..., Sanic]) -> dict[str, Any]:
    # With an API key and a rate limit: the document must still be served without either.
    app = make_app(API_KEY="secret", RATE_LIMIT_PER_MIN="1000")
    _, response = await app.asgi_client.get("/docs/openapi.json")
    assert response.status == 200, response.text
    return response.json


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or the component it refers to."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    return spec["components"]["schemas"][ref.removeprefix(prefix)]


def refs_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(refs_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(refs_in(item) for item in value))
    return set()


def header_names(operation: dict[str, Any]) -> set[str]:
    return {param["name"] for param in operation.get("parameters", []) if param["in"] == "header"}


async def test_every_endpoint_is_documented(spec: dict[str, Any], make_app: Callable[..., Sanic]) -> None:
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert set(OPERATIONS) <= documented
    # ... and so is every route the app serves, bar the documentation itself and automatic methods.
    served = {
        ("/" + route.path, method.lower())
        for route in make_app().router.routes
        for method in route.methods
        if not route.path.startswith("docs") and method not in {"HEAD", "OPTIONS"}
    }
    assert served <= documented


async def test_the_ui_is_served_without_a_key(make_app: Callable[..., Sanic]) -> None:
    _, response = await make_app(API_KEY="secret").asgi_client.get("/docs")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")


async def test_the_ui_loads_nothing_from_outside_the_gateway(make_app: Callable[..., Sanic]) -> None:
    # A self-hosted gateway often has no way out to a CDN: a page that needs one stays blank.
    app = make_app(API_KEY="secret")
    _, page = await app.asgi_client.get("/docs")
    assert "http:" not in page.text and "https:" not in page.text
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r'url: "([^"]+)"', page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/openapi.json"} <= set(loaded)
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for path in loaded:
        _, response = await app.asgi_client.get(path)
        assert response.status == 200, path
        assert response.headers["content-type"].startswith(types[path[path.rindex(".") :]]), path
    _, escape = await app.asgi_client.get("/docs/assets/%2e%2e/%2e%2e/app.py")
    assert escape.status == 404


def test_the_document_names_the_api_and_its_tags(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    tags = {tag["name"] for tag in spec["tags"]}
    assert {"health", "models", "chat", "embeddings", "openai", "metrics"} <= tags


def test_request_bodies_have_schemas_naming_their_fields(spec: dict[str, Any]) -> None:
    for path, method in OPERATIONS:
        operation = spec["paths"][path][method]
        component, required, _ = ENDPOINTS[path][method]
        if component is None:
            assert "requestBody" not in operation, path
            continue
        body = operation["requestBody"]
        assert body["required"] is True, path
        schema = body["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{component}"}, path
        resolved = resolve(spec, schema)
        assert resolved["type"] == "object", path
        assert set(resolved["required"]) == required, path
        assert required <= set(resolved["properties"]), path
        assert resolved["additionalProperties"] is True, path  # extra OpenAI fields pass through


def test_the_api_chat_body_documents_every_field_with_its_type(spec: dict[str, Any]) -> None:
    properties = spec["components"]["schemas"]["ApiChatRequest"]["properties"]
    types = {name: prop.get("type") for name, prop in properties.items()}
    assert types == {
        "message": "string",
        "model": "string",
        "modelKey": "string",
        "system": "string",
        "temperature": "number",
        "max_tokens": "integer",
    }
    assert all(prop.get("description") for prop in properties.values())
    embeddings_input = spec["components"]["schemas"]["ApiEmbeddingsRequest"]["properties"]["input"]
    assert [option["type"] for option in embeddings_input["oneOf"]] == ["string", "array"]
    stream = spec["components"]["schemas"]["OpenAIChatRequest"]["properties"]["stream"]
    assert stream["type"] == "boolean"


def test_error_responses_use_the_error_envelope(spec: dict[str, Any]) -> None:
    for path, method in OPERATIONS:
        responses = spec["paths"][path][method]["responses"]
        _, _, errors = ENDPOINTS[path][method]
        assert {status for status in responses if status.startswith(("4", "5"))} == errors, path
        for status in errors:
            assert responses[status]["description"], (path, status)
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
        if "429" in errors:
            assert "Retry-After" in responses["429"]["description"], path
        if errors == ROUTED_ERRORS:  # vLLM's other error statuses, relayed unchanged
            assert "default" in responses, path


def test_the_error_envelope_has_message_type_and_code(spec: dict[str, Any]) -> None:
    envelope = spec["components"]["schemas"]["ErrorResponse"]
    assert envelope["required"] == ["error"]
    detail = resolve(spec, envelope["properties"]["error"])
    assert set(detail["required"]) == {"message", "type", "code"}
    assert detail["properties"]["message"]["type"] == "string"
    assert detail["properties"]["type"]["type"] == "string"
    assert {option["type"] for option in detail["properties"]["code"]["oneOf"]} == {"string", "integer"}


def test_success_responses_name_their_media_types(spec: dict[str, Any]) -> None:
    special = {
        "/metrics": {"text/plain"},
        "/api/chat/stream": {"text/event-stream"},
        "/v1/chat/completions": {"application/json", "text/event-stream"},
        "/v1/completions": {"application/json", "text/event-stream"},
    }
    for path, method in OPERATIONS:
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert set(content) == special.get(path, {"application/json"}), path
        if "application/json" in content:
            assert resolve(spec, content["application/json"]["schema"])["type"] == "object", path


def test_model_list_and_health_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    model = resolve(spec, schemas["ApiModelList"]["properties"]["data"]["items"])
    assert set(model["required"]) == {"id", "object", "sources"}
    source = resolve(spec, model["properties"]["sources"]["items"])
    assert source["properties"]["latency_ms"]["type"] == "integer"
    assert set(schemas["Health"]["properties"]["vllm"]["enum"]) == {"ok", "unavailable", "unconfigured", "unknown"}


def test_header_parameters(spec: dict[str, Any]) -> None:
    for path, method in OPERATIONS:
        routed = ENDPOINTS[path][method][2] == ROUTED_ERRORS
        expected = {"X-Request-ID", "X-Model-Key"} if routed else {"X-Request-ID"}
        assert header_names(spec["paths"][path][method]) == expected, path


def test_security_schemes_and_the_public_health_check(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["Bearer"]["type"] == "http"
    assert schemes["Bearer"]["scheme"] == "bearer"
    # Either scheme will do (two requirements, not one that needs both).
    assert spec["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert spec["paths"]["/health"]["get"]["security"] == [{}]
    for path, method in OPERATIONS:
        if path != "/health":
            assert "security" not in spec["paths"][path][method]  # the document-wide default


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    refs = refs_in(spec)
    assert refs
    for ref in refs:
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in spec["components"][kind], ref
