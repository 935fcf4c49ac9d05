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
    """The schema with every ``#/$defs/...`` reference replaced by its definition.

    Both libraries put model schemas in ``$defs``; inside openapi.json such a reference would resolve against the
    document root and point nowhere, so definitions are inlined. A recursive model cannot be inlined; its
    recursion is described as a plain object.
    """
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [resolve(value, seen) for value in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                return {"type": "object", "description": f"{name} (recursive)"}
            return resolve(defs[name], seen | {name})
        return {key: resolve(value, seen) for key, value in node.items()}

    resolved: dict[str, Any] = resolve(schema, frozenset())
    return resolved


def stream_responses(
    item: Any,
    *,
    formats: Sequence[str] = ("ndjson", "json", "csv"),
    description: str | None = None,
    end_record: bool = False,
    status_code: int = 200,
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument for a path operation that returns a :class:`~chute.RecordStream`.

    ``@app.get("/orders", response_class=RecordStream, responses=stream_responses(Order))``: with
    ``response_class=RecordStream`` FastAPI adds no default ``application/json`` entry of its own.
    """
    if description is None:
        description = (
            "A stream of records, one format negotiated by `Accept`."
            if len(formats) > 1
            else f"A stream of records as {lookup(formats[0])[0].name.upper()}."
        )
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
            elif fmt.name == "arrow":
                content[media_type] = {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "An Apache Arrow IPC stream: record batches with one column per item field",
                    },
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
