"""pydantic models as OpenAPI 3.0 component schemas (gateway/api/openapi/schema.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.api.openapi.schema import doc_ref, openapi_schema, optional


class Part(BaseModel):
    """A part."""

    text: str


class Whole(BaseModel):
    """The whole, documented."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Its name.", examples=["a"], min_length=1)
    note: str | None = Field(None, description="May be null.")
    part: Part | None = Field(None, description="A nullable reference.")
    parts: list[Part] = Field(description="References in a list.")
    kind: Literal["x"] = Field(description="One value.")
    count: int = optional(description="May be absent, never null.", json_schema_extra={"minimum": 0})
    texts: list[Any] = Field(description="Documented as something else.", json_schema_extra={"items": doc_ref(Part)})
    title: str = Field(description="A property called title is kept.")


def test_a_model_and_the_models_it_refers_to_become_components() -> None:
    schemas = openapi_schema(Whole)
    assert set(schemas) == {"Whole", "Part"}
    whole = schemas["Whole"]
    assert whole["type"] == "object" and whole["description"] == "The whole, documented."
    assert whole["additionalProperties"] is False
    assert whole["required"] == ["name", "parts", "kind", "texts", "title"]
    assert "title" not in whole and "title" in whole["properties"]


def test_the_dialect_is_openapi_30() -> None:
    properties = openapi_schema(Whole)["Whole"]["properties"]
    assert properties["name"] == {"type": "string", "description": "Its name.", "example": "a", "minLength": 1}
    assert properties["note"] == {"type": "string", "description": "May be null.", "nullable": True}
    # 3.0 ignores keywords beside a $ref: a nullable one goes in allOf, which keeps them.
    assert properties["part"] == {
        "allOf": [{"$ref": "#/components/schemas/Part"}],
        "description": "A nullable reference.",
        "nullable": True,
    }
    assert properties["parts"]["items"] == {"$ref": "#/components/schemas/Part"}
    assert properties["kind"]["enum"] == ["x"] and "const" not in properties["kind"]
    assert properties["count"] == {"type": "integer", "description": "May be absent, never null.", "minimum": 0}
    assert properties["texts"]["items"] == {"$ref": "#/components/schemas/Part"}
