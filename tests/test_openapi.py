from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import fastapi
import msgspec
import pydantic
import pytest

from chute import ConfigurationError, RecordStream, stream_responses
from chute.openapi import item_schema

MEDIA_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json", "text/csv"}


class OrderModel(pydantic.BaseModel):
    id: int
    name: str
    at: datetime.datetime


@dataclasses.dataclass
class OrderDataclass:
    id: int
    name: str
    at: datetime.datetime


class OrderStruct(msgspec.Struct):
    id: int
    name: str
    at: datetime.datetime


ITEMS = [OrderModel, OrderDataclass, OrderStruct]


def assert_order_schema(schema: dict[str, Any]) -> None:
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"id", "name", "at"}
    assert schema["properties"]["id"]["type"] == "integer"
    assert schema["properties"]["at"]["type"] == "string"
    assert set(schema["required"]) == {"id", "name", "at"}


@pytest.mark.parametrize("item", ITEMS)
def test_item_schema_is_inlined(item: type) -> None:
    schema = item_schema(item)
    assert "$ref" not in schema
    assert "$defs" not in schema
    assert_order_schema(schema)


@pytest.mark.parametrize("item", ITEMS)
def test_every_media_type_carries_the_item_schema(item: type) -> None:
    responses = stream_responses(item)
    content = responses[200]["content"]
    assert set(content) == MEDIA_TYPES
    for media_type in ("application/x-ndjson", "application/jsonl", "application/x-jsonlines", "text/csv"):
        assert_order_schema(content[media_type]["itemSchema"])
    assert content["text/csv"]["schema"]["type"] == "string"
    assert content["application/json"]["schema"]["type"] == "array"
    assert_order_schema(content["application/json"]["schema"]["items"])
    assert 406 in responses


def test_formats_limit_the_media_types() -> None:
    responses = stream_responses(OrderModel, formats=("csv", "jsonl"), status_code=206)
    assert set(responses[206]["content"]) == {
        "text/csv",
        "application/x-ndjson",
        "application/jsonl",
        "application/x-jsonlines",
    }


def test_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        stream_responses(OrderModel, formats=("xml",))


def test_end_record_is_described() -> None:
    assert "@end" in stream_responses(OrderModel, end_record=True)[200]["description"]
    assert "@end" not in stream_responses(OrderModel)[200]["description"]


@pytest.mark.parametrize("item", ITEMS)
def test_app_openapi_shows_the_stream(item: type) -> None:
    app = fastapi.FastAPI()

    @app.get("/orders", responses=stream_responses(item))
    def orders() -> RecordStream:
        return RecordStream([])

    operation = app.openapi()["paths"]["/orders"]["get"]
    content = operation["responses"]["200"]["content"]
    assert set(content) >= MEDIA_TYPES
    assert_order_schema(content["application/x-ndjson"]["itemSchema"])
    assert_order_schema(content["text/csv"]["itemSchema"])
    assert_order_schema(content["application/json"]["schema"]["items"])
    assert "406" in operation["responses"]


class Line(pydantic.BaseModel):
    sku: str


class Nested(pydantic.BaseModel):
    id: int
    lines: list[Line]
    parent: Nested | None = None


def test_nested_models_are_inlined_so_no_reference_dangles() -> None:
    schema = item_schema(Nested)
    text = json.dumps(schema)
    assert "$defs" not in text
    assert "$ref" not in text
    assert schema["properties"]["lines"]["items"]["properties"]["sku"]["type"] == "string"
    assert {"type": "object", "description": "Nested (recursive)"} in schema["properties"]["parent"]["anyOf"]


def test_the_description_names_a_fixed_format() -> None:
    assert "CSV" in stream_responses(Line, formats=("csv",))[200]["description"]
    assert "Accept" in stream_responses(Line)[200]["description"]
