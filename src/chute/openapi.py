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


_PYTHON_SAMPLES = {
    "ndjson": """import json

import httpx

with httpx.stream("GET", "{url}", timeout=None) as response:
    response.raise_for_status()
    for line in response.iter_lines():  # one record per line, parsed as it arrives
        record = json.loads(line)
        print(record)
# The connection ends with an error, never quietly, when the stream was cut.""",
    "csv": """import csv

import httpx

with httpx.stream("GET", "{url}", timeout=None) as response:
    response.raise_for_status()
    for row in csv.reader(response.iter_lines()):  # the header row first
        print(row)""",
    "json": """import httpx

records = httpx.get("{url}", timeout=None).raise_for_status().json()  # one JSON array""",
    "events": """import asyncio

import chute.client


async def main() -> None:
    # Reconnects as browsers do and resumes with Last-Event-ID: no event is missed.
    async for event in chute.client.events("{url}"):
        print(event.id, event.event, event.data)


asyncio.run(main())""",
    "file": """import chute.client

# Resumes an interrupted download with Range + If-Range and checks Repr-Digest when the server sends one.
result = chute.client.download("{url}", "downloaded.bin")
print(result.path, result.size)""",
}

_JAVASCRIPT_SAMPLES = {
    "ndjson": """const response = await fetch("{url}");
if (!response.ok) throw new Error(`HTTP ${response.status}`);
const lines = response.body.pipeThrough(new TextDecoderStream()).getReader();
let buffer = "";
for (;;) {
  const { value, done } = await lines.read();  // rejects when the stream was cut
  if (done) break;
  buffer += value;
  const complete = buffer.split("\\n");
  buffer = complete.pop();
  for (const line of complete) if (line) console.log(JSON.parse(line));
}""",
    "csv": """const response = await fetch("{url}");
if (!response.ok) throw new Error(`HTTP ${response.status}`);
const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
let buffer = "";
for (;;) {
  const { value, done } = await reader.read();
  if (done) break;
  buffer += value;
  const rows = buffer.split("\\r\\n");
  buffer = rows.pop();
  rows.forEach((row) => console.log(row));  // use a CSV parser for quoted fields
}""",
    "json": """const records = await (await fetch("{url}")).json();""",
    "events": """const source = new EventSource("{url}");  // reconnects with Last-Event-ID by itself
source.onmessage = (event) => console.log(event.lastEventId, event.data);
source.addEventListener("reset", () => console.warn("events were missed: reload the state"));""",
    "file": """// A link the browser downloads (and can resume) itself:
const link = Object.assign(document.createElement("a"), { href: "{url}", download: "" });
link.click();""",
}

_KINDS = {
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
    "application/json": "json",
    "text/event-stream": "events",
    "application/octet-stream": "file",
}


def add_code_samples(schema: dict[str, Any], base_url: str = "http://127.0.0.1:8000") -> dict[str, Any]:
    """Add a Python and a JavaScript example of consuming each streaming operation of an OpenAPI ``schema``.

    An operation streams when its 200 response offers NDJSON, CSV, SSE or a file (a plain JSON array counts only
    next to those). Each gets ``x-codeSamples`` (shown by Redoc and other renderers) and the same examples in its
    description, which ``/docs`` renders. Returns ``schema``, changed in place.
    """
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method != "get" or not isinstance(operation, dict):
                continue
            content = operation.get("responses", {}).get("200", {}).get("content", {})
            kinds = [_KINDS[media] for media in content if media in _KINDS]
            streaming = [kind for kind in kinds if kind != "json"]
            if not streaming:
                continue
            url = base_url + path.replace("{", "").replace("}", "")
            python = _PYTHON_SAMPLES[streaming[0]].replace("{url}", url)
            javascript = _JAVASCRIPT_SAMPLES[streaming[0]].replace("{url}", url)
            operation["x-codeSamples"] = [
                {"lang": "Python", "label": "Python (httpx / chute.client)", "source": python},
                {"lang": "JavaScript", "label": "JavaScript (browser)", "source": javascript},
            ]
            operation["description"] = (
                operation.get("description", "").rstrip()
                + f"\n\n**Consuming it in Python**\n\n```python\n{python}\n```\n\n"
                + f"**In JavaScript**\n\n```javascript\n{javascript}\n```\n"
            )
    return schema
