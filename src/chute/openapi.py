"""Declaring what a stream yields, so ``/openapi.json`` and ``/docs`` show its media types and item schema.

FastAPI cannot see through a response object to the records inside it; :func:`stream_responses` builds the
``responses=`` entry of a path operation instead. Sequential formats (NDJSON, CSV) carry the schema of one item as
``itemSchema`` (as FastAPI itself does for JSON Lines, after OpenAPI 3.2); the JSON array carries an array schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pydantic

from chute.formats import lookup
from chute.responses.records import END_KEY


def item_schema(item: Any) -> dict[str, Any]:
    """JSON Schema of one record type: a pydantic model, dataclass, TypedDict or msgspec Struct."""
    if isinstance(item, type) and issubclass(item, msgspec.Struct):
        schema: dict[str, Any] = msgspec.json.schema(item)
        return _inline(schema)
    return _inline(pydantic.TypeAdapter(item).json_schema())


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    # Both libraries put a flat record's schema behind a $ref into $defs; openapi.json has no room for $defs at the
    # top of a response, so the one referenced definition is inlined.
    defs = schema.pop("$defs", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/") and len(defs) == 1:
        return dict(defs[ref.removeprefix("#/$defs/")])
    if defs:
        schema["$defs"] = defs
    return schema


def stream_responses(
    item: Any,
    *,
    formats: Sequence[str] = ("ndjson", "json", "csv"),
    description: str = "A stream of records; the format follows `Accept` or the `format` query parameter.",
    end_record: bool = False,
    status_code: int = 200,
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument for a path operation that returns a :class:`~chute.RecordStream`.

    ``@app.get("/orders", responses=stream_responses(Order))``
    """
    schema = item_schema(item)
    content: dict[str, Any] = {}
    for name in formats:
        fmt, _ = lookup(name)
        for media_type in fmt.media_types:
            if fmt.name == "json":
                content[media_type] = {"schema": {"type": "array", "items": schema}}
            elif fmt.name == "csv":
                content[media_type] = {
                    "schema": {"type": "string", "description": "RFC 4180 CSV, a header row, then one row per item"},
                    "itemSchema": schema,
                }
            else:
                content[media_type] = {"itemSchema": schema}
    if end_record:
        description += f' The last item is `{{"{END_KEY}": {{"records": N}}}}`; without it the stream was cut.'
    return {
        status_code: {"description": description, "content": content},
        406: {"description": "None of the supported media types is acceptable (problem JSON lists them)."},
    }
