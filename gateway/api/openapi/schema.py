"""
Component schemas from pydantic models, in the dialect of the document: OpenAPI 3.0.3, which is
what sanic-ext emits.

The request bodies (gateway/api/payloads.py, which checks bodies with the same models) and the
answers (answers.py, errors.py) are pydantic models; `component` registers a model, and the
models it refers to, as `#/components/schemas/<name>` when its module is imported. pydantic
writes JSON Schema 2020-12; `openapi_schema` turns that into 3.0 once, at import:

- a union with null becomes the other branch with `nullable: true` (a `$ref` goes in `allOf`,
  since 3.0 ignores keywords beside a `$ref`);
- `const` becomes a one-value `enum`, `examples` the first `example`;
- pydantic's `title`s and `default: null` go: they say nothing the property's name does not;
- `doc_ref(Model)` in a `json_schema_extra` becomes a `$ref` (pydantic would look for a `$ref`
  among the model's own definitions, and fail).

A model's docstring is its description; a field's `description`, `examples` and constraints come
from its `Field(...)`, and `json_schema_extra` documents what vLLM checks but the gateway does not
(say, `minimum` of `temperature`), so that the gateway's own checks stay what they are.

The registry is sanic-ext's specification builder, a process-wide singleton (the object
`app.ext.openapi` returns), so this works without touching the app factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sanic_ext.extensions.openapi.builders import OperationStore, SpecificationBuilder
from sanic_ext.extensions.openapi.definitions import RequestBody, Response

__all__ = [
    "JSON",
    "SSE",
    "component",
    "doc_ref",
    "json_response",
    "openapi_schema",
    "ref",
    "request_body",
    "spec",
    "status",
]

JSON = "application/json"
SSE = "text/event-stream"
_REF = "#/components/schemas/{model}"
_NULL = {"type": "null"}
_DOC_REF = "x-doc-ref"
_SUBSCHEMA = frozenset({"items", "additionalProperties", "not"})
_SUBSCHEMAS = frozenset({"anyOf", "oneOf", "allOf"})

spec = SpecificationBuilder()
Model = TypeVar("Model", bound=type[BaseModel])
Handler = TypeVar("Handler", bound=Callable[..., Any])


def openapi_schema(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The schema of `model` and of each model it refers to, by name, as OpenAPI 3.0."""
    raw = model.model_json_schema(ref_template=_REF)
    definitions = raw.pop("$defs", {})
    return {name: _to_openapi_30(schema) for name, schema in {model.__name__: raw, **definitions}.items()}


def _to_openapi_30(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _to_openapi_30(item) for name, item in value.items()}
        elif key in _SUBSCHEMA and isinstance(value, dict):
            out[key] = _to_openapi_30(value)
        elif key in _SUBSCHEMAS:
            out[key] = [_to_openapi_30(item) for item in value]
        elif key == _DOC_REF:
            out["$ref"] = _REF.format(model=value)
        elif key == "const":
            out["enum"] = [value]
        elif key == "examples":
            out["example"] = value[0]
        else:
            out[key] = value
    if "$ref" in out:  # OpenAPI 3.0 ignores what stands beside a $ref: the component says it all
        return {"$ref": out["$ref"]}
    for union in ("anyOf", "oneOf"):
        options = out.get(union)
        if options and _NULL in options:
            rest = [option for option in options if option != _NULL]
            del out[union]
            if len(rest) > 1:
                out[union] = rest
            elif "$ref" in rest[0]:
                out["allOf"] = rest
            else:
                out = {**rest[0], **out}  # the field's own keywords win over its type's
            out["nullable"] = True
    return out


def component(model: Model) -> Model:
    """Class decorator: register the model (and the models it refers to) as component schemas."""
    for name, schema in openapi_schema(model).items():
        spec.add_component("schemas", name, schema)
    return model


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to a model registered with `component`."""
    return {"$ref": _REF.format(model=model.__name__)}


def optional(**keywords: Any) -> Any:
    """A field that may be absent: not required, and nullable only where its type says so."""
    return Field(None, **keywords)


def doc_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A `$ref` to a registered model, for a `json_schema_extra` (documentation only)."""
    return {_DOC_REF: model.__name__}


def status(code: int | str) -> Any:
    # A string, although sanic-ext types it as an int: the status becomes a key of the `responses`
    # object, and the app serialises the document with orjson, which refuses integer keys.
    return str(code)


def json_response(model: type[BaseModel], description: str, code: int = 200) -> Response:
    return Response({JSON: ref(model)}, status=status(code), description=description)


def request_body(model: type[BaseModel], description: str) -> Callable[[Handler], Handler]:
    """Document a handler's JSON request body, leaving the handler as it is.

    `openapi.definition(body=...)` documents the same, but wraps the handler in a layer that runs
    on every request (for validation, which the gateway does itself in `gateway.api.payloads`).
    """
    body = RequestBody({JSON: ref(model)}, required=True, description=description)

    def attach(handler: Handler) -> Handler:
        fields = dict(body.fields)
        OperationStore()[handler].body(fields.pop("content"), **fields)
        return handler

    return attach
