"""The OpenAPI document at /docs/openapi.json: every endpoint, its body, its errors, its headers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sanic import Sanic

API_ROUTED_ERRORS = {"400", "401", "403", "404", "408", "409", "413", "429", "502", "504"}
# /v1 answers routing mistakes as OpenAI does (400 or 404), never 409, which the SDKs retry.
OPENAI_ROUTED_ERRORS = API_ROUTED_ERRORS - {"409"}
ROUTED = (API_ROUTED_ERRORS, OPENAI_ROUTED_ERRORS)
LISTING_ERRORS = {"401", "429"}
# Statuses with which vLLM's own error bodies are relayed as well as the gateway's.
RELAYED = {"400", "404"}

# path -> method -> (request body schema or None, required body fields, error statuses)
ENDPOINTS: dict[str, dict[str, tuple[str | None, set[str], set[str]]]] = {
    "/health": {"get": (None, set(), set())},
    "/metrics": {"get": (None, set(), {"401"})},
    "/api/models": {"get": (None, set(), LISTING_ERRORS)},
    "/api/routes": {"get": (None, set(), LISTING_ERRORS)},
    # `message`, or `messages` instead: see test_the_api_chat_body_needs_a_message_or_messages
    "/api/chat": {"post": ("ApiChatRequest", set(), API_ROUTED_ERRORS)},
    "/api/chat/stream": {"post": ("ApiChatRequest", set(), API_ROUTED_ERRORS)},
    "/api/embeddings": {"post": ("ApiEmbeddingsRequest", {"input"}, API_ROUTED_ERRORS)},
    "/v1/models": {"get": (None, set(), LISTING_ERRORS)},
    "/v1/chat/completions": {"post": ("OpenAIChatRequest", {"messages"}, OPENAI_ROUTED_ERRORS)},
    "/v1/completions": {"post": ("OpenAICompletionRequest", {"prompt"}, OPENAI_ROUTED_ERRORS)},
    "/v1/embeddings": {"post": ("OpenAIEmbeddingsRequest", {"input"}, OPENAI_ROUTED_ERRORS)},
}


# The documented error envelope of each path: OpenAI's on /v1, the gateway's elsewhere.
def envelope_of(path: str) -> str:
    return "OpenAIErrorResponse" if path.startswith("/v1/") else "ErrorResponse"


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
        assert set(resolved.get("required", [])) == required, path
        assert required <= set(resolved["properties"]), path
        assert resolved["additionalProperties"] is True, path  # extra OpenAI fields pass through


def test_the_api_chat_body_documents_every_field_with_its_type(spec: dict[str, Any]) -> None:
    properties = spec["components"]["schemas"]["ApiChatRequest"]["properties"]
    types = {name: prop.get("type") for name, prop in properties.items()}
    assert types == {
        "message": "string",
        "messages": "array",
        "model": "string",
        "modelKey": "string",
        "system": "string",
        "temperature": "number",
        "max_tokens": "integer",
        "user": "string",  # passed on to vLLM; the session's key with ROUTING_POLICY=session
    }
    assert all(prop.get("description") for prop in properties.values())
    # What the gateway checks, and what vLLM refuses with a 400.
    assert properties["message"]["minLength"] == 1 and "nullable" not in properties["message"]
    assert properties["messages"]["minItems"] == 1
    assert properties["max_tokens"]["minimum"] == 1
    assert properties["temperature"]["minimum"] == 0
    for name in ("model", "modelKey", "system", "temperature", "max_tokens", "user"):
        assert properties[name]["nullable"] is True, name  # a null is taken as an absent field
    for component in ("ApiEmbeddingsRequest", "OpenAIEmbeddingsRequest", "OpenAICompletionRequest"):
        properties = spec["components"]["schemas"][component]["properties"]
        texts = properties.get("input") or properties["prompt"]
        assert [option["type"] for option in texts["oneOf"]] == ["string", "array"], component
        assert texts["oneOf"][1]["minItems"] == 1, component  # vLLM: "You must pass at least one prompt"
    stream = spec["components"]["schemas"]["OpenAIChatRequest"]["properties"]["stream"]
    assert stream["type"] == "boolean" and stream["nullable"] is True


def test_the_api_chat_body_needs_a_message_or_messages(spec: dict[str, Any]) -> None:
    body = spec["components"]["schemas"]["ApiChatRequest"]
    assert "required" not in body
    assert body["anyOf"] == [
        {"required": ["message"]},
        {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
    ]


def test_error_responses_use_the_error_envelope_of_their_path(spec: dict[str, Any]) -> None:
    for path, method in OPERATIONS:
        responses = spec["paths"][path][method]["responses"]
        _, _, errors = ENDPOINTS[path][method]
        assert {status for status in responses if status.startswith(("4", "5"))} == errors, path
        envelope = {"$ref": f"#/components/schemas/{envelope_of(path)}"}
        for status in errors:
            assert responses[status]["description"], (path, status)
            schema = responses[status]["content"]["application/json"]["schema"]
            if errors in ROUTED and status in RELAYED:
                assert schema == {"anyOf": [envelope, {"$ref": "#/components/schemas/UpstreamErrorBody"}]}
            else:
                assert schema == envelope, (path, status)
        if "429" in errors:
            assert "Retry-After" in responses["429"]["description"], path
        if errors in ROUTED:  # vLLM's other error statuses, relayed unchanged
            relayed = responses["default"]["content"]["application/json"]["schema"]
            assert relayed == {"$ref": "#/components/schemas/UpstreamErrorBody"}, path
        else:
            assert "default" not in responses, path


def test_the_error_envelopes(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for envelope, detail_name, fields in (
        ("ErrorResponse", "ErrorDetail", {"message", "type", "code"}),
        ("OpenAIErrorResponse", "OpenAIErrorDetail", {"message", "type", "param", "code"}),
    ):
        assert schemas[envelope]["required"] == ["error"]
        assert schemas[envelope]["additionalProperties"] is False  # exactly what the gateway sends
        detail = resolve(spec, schemas[envelope]["properties"]["error"])
        assert detail is schemas[detail_name]
        assert set(detail["required"]) == set(detail["properties"]) == fields
        assert detail["additionalProperties"] is False
        for name in ("message", "type", "code"):
            assert detail["properties"][name]["type"] == "string", (envelope, name)
    param = schemas["OpenAIErrorDetail"]["properties"]["param"]
    assert param["type"] == "string" and param["nullable"] is True  # null when no field is at fault
    # vLLM's bodies: relayed as they are, so nothing in them is promised.
    relayed = schemas["UpstreamErrorBody"]
    assert relayed["additionalProperties"] is True and "required" not in relayed
    # vLLM's code is the HTTP status: a body with a string code is the gateway's, in its path's envelope.
    assert schemas["UpstreamErrorDetail"]["properties"]["code"]["type"] == "integer"


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


def test_event_streams_are_described_event_by_event(spec: dict[str, Any]) -> None:
    # An event stream is not JSON. Its schema describes one event, as OpenAPI 3.2 models
    # text/event-stream (and as schemathesis validates a 3.0 document's stream): data is a string.
    for path in ("/api/chat/stream", "/v1/chat/completions", "/v1/completions"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert content["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/ServerSentEvent"}, path
    event = spec["components"]["schemas"]["ServerSentEvent"]
    assert event["type"] == "object" and event["required"] == ["data"]
    assert event["additionalProperties"] is False
    assert event["properties"]["data"]["type"] == "string"
    assert event["properties"]["event"]["enum"] == ["message", "error"]  # `event: error` for in-band failures
    assert set(event["properties"]) == {"data", "event", "id", "retry"}


def test_fields_that_may_be_null_are_nullable(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    replica = schemas["ReplicaStatus"]
    # null until the replica first fails / answers / has its engine's metrics read
    for name in ("last_error", "latency_ms", "engine"):
        assert replica["properties"][name]["nullable"] is True, name
        assert name in replica["required"], name  # ... but always there
    assert replica["properties"]["last_error"]["type"] == "string"
    for name in set(replica["properties"]) - {"last_error", "latency_ms", "engine"}:
        assert "nullable" not in replica["properties"][name], name
    for relayed in ("ChatCompletion", "Completion", "EmbeddingList"):
        properties = schemas[relayed]["properties"]
        assert properties["model"] == {**properties["model"], "type": "string", "nullable": True}, relayed
        assert properties["usage"]["nullable"] is True, relayed
        assert schemas[relayed]["additionalProperties"] is True and "required" not in schemas[relayed], relayed
    for name in ("root", "parent", "max_model_len"):
        assert schemas["OpenAIModel"]["properties"][name]["nullable"] is True, name
    assert schemas["ChatCompletion"]["properties"]["created"]["format"] == "int64"  # Unix time outlives int32


def test_every_response_documents_its_headers(spec: dict[str, Any]) -> None:
    headers = spec["components"]["headers"]
    assert headers["X-Request-ID"]["required"] is True
    assert headers["Retry-After"]["required"] is True
    assert headers["WWW-Authenticate"]["required"] is True
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert headers[name]["schema"]["type"] == "integer"
        assert "required" not in headers[name]  # only while rate limiting is on
    rate = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    for path, method in OPERATIONS:
        limited = path not in {"/health", "/metrics"}
        for status, response in spec["paths"][path][method]["responses"].items():
            expected = {"X-Request-ID"} | (rate if limited else set())
            expected |= {"401": {"WWW-Authenticate"}, "429": {"Retry-After"}, "502": {"x-should-retry"}}.get(
                status, set()
            )
            assert set(response["headers"]) == expected, (path, status)
            for name, header in response["headers"].items():
                assert header == {"$ref": f"#/components/headers/{name}"}


async def test_the_document_describes_this_deployment(make_app: Callable[..., Sanic]) -> None:
    async def document(**env: str) -> dict[str, Any]:
        _, response = await make_app(**env).asgi_client.get("/docs/openapi.json")
        return response.json

    # No API_KEY, RATE_LIMIT_PER_MIN=0: no key needed, no 401, no 429 and no rate headers.
    open_gateway = await document(RATE_LIMIT_PER_MIN="0")
    assert "security" not in open_gateway
    for path, method in OPERATIONS:
        operation = open_gateway["paths"][path][method]
        assert "security" not in operation, path
        assert not {"401", "429"} & set(operation["responses"]), path
        for response in operation["responses"].values():
            assert not any(name.startswith("X-RateLimit") for name in response["headers"]), path
    # METRICS_PUBLIC: /metrics alone needs no key.
    public_metrics = await document(API_KEY="secret", METRICS_PUBLIC="true")
    metrics = public_metrics["paths"]["/metrics"]["get"]
    assert metrics["security"] == [{}] and "401" not in metrics["responses"]
    assert "401" in public_metrics["paths"]["/api/models"]["get"]["responses"]


def test_operation_ids_are_names_a_client_generator_can_use(spec: dict[str, Any]) -> None:
    ids = {(path, method): spec["paths"][path][method]["operationId"] for path, method in OPERATIONS}
    assert ids[("/v1/chat/completions", "post")] == "createChatCompletion"  # as OpenAI's own document
    assert ids[("/v1/models", "get")] == "listModels"
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", operation_id) for operation_id in ids.values()), ids


async def test_the_document_is_built_at_start_up_not_per_request(
    make_app: Callable[..., Sanic], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sanic_ext.extensions.openapi.builders import SpecificationBuilder

    build = SpecificationBuilder.build
    builds: list[Sanic] = []

    def counting_build(self: SpecificationBuilder, app: Sanic) -> Any:
        builds.append(app)
        return build(self, app)

    monkeypatch.setattr(SpecificationBuilder, "build", counting_build)
    app = make_app()
    # sanic-testing's ASGI client starts the app for each request: one build is the start-up's;
    # sanic-ext's own handler, which would build it again, does not run.
    _, response = await app.asgi_client.get("/docs/openapi.json")
    assert response.status == 200
    assert builds == [app]
    assert response.body == app.ctx.openapi_document
    assert response.headers["content-type"] == "application/json"
    assert "x-request-id" in response.headers  # the response middleware still runs


def test_model_list_and_health_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    model = resolve(spec, schemas["ApiModelList"]["properties"]["data"]["items"])
    assert set(model["required"]) == {"id", "object", "sources"}
    source = resolve(spec, model["properties"]["sources"]["items"])
    assert source["properties"]["latency_ms"]["type"] == "integer"
    assert set(schemas["Health"]["properties"]["vllm"]["enum"]) == {"ok", "unavailable", "unconfigured", "unknown"}


def test_header_parameters(spec: dict[str, Any]) -> None:
    for path, method in OPERATIONS:
        routed = ENDPOINTS[path][method][2] in ROUTED
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
