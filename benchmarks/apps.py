"""The contenders: one FastAPI app per way of streaming records, each served by its own uvicorn process.

Every app answers ``GET /csv?rows=N`` and ``GET /ndjson?rows=N`` (FastAPI's native JSON Lines has no CSV, so that
app serves NDJSON only) and ``GET /healthz``. The record sources are defined once here and shared by the apps and
by the runner's in-process anchor, so every contender streams exactly the same rows.

Run one as ``python -m benchmarks.apps CONTENDER PORT``: uvicorn with uvloop and httptools, one worker, loopback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

from chute import RecordStream

CSV_COLUMNS = ("id", "name", "value")
BATCH = 4096
"""Records per list in the batched sources: what a database cursor's ``fetchmany`` would typically hand over."""

NDJSONRecord = dict[str, int | str]
CSVRow = tuple[int, str, float]


# -- the record sources, one record per iteration (the common case the targets are about)


async def ndjson_records(rows: int) -> AsyncIterator[NDJSONRecord]:
    for i in range(rows):
        yield {"id": i, "name": f"Record {i}"}


async def csv_rows(rows: int) -> AsyncIterator[CSVRow]:
    for i in range(rows):
        yield (i, f"item_{i}", i * 1.5)


# -- the same records in lists, as a sync source that fetches many at a time would produce them


def ndjson_batches(rows: int) -> Iterator[list[NDJSONRecord]]:
    for start in range(0, rows, BATCH):
        yield [{"id": i, "name": f"Record {i}"} for i in range(start, min(start + BATCH, rows))]


def csv_batches(rows: int) -> Iterator[list[CSVRow]]:
    for start in range(0, rows, BATCH):
        yield [(i, f"item_{i}", i * 1.5) for i in range(start, min(start + BATCH, rows))]


# -- the apps


def bare_app() -> FastAPI:
    """A FastAPI app with only /healthz (how the runner knows a server is up) and no docs routes."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


def seed_app() -> FastAPI:
    """The way the seed service streamed: a ``StreamingResponse`` over one formatted string per ``yield``."""
    app = bare_app()

    @app.get("/csv")
    async def csv(rows: int) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            yield "id,name,value\n"
            for i in range(rows):
                yield f"{i},item_{i},{i * 1.5}\n"

        return StreamingResponse(lines(), media_type="text/csv")

    @app.get("/ndjson")
    async def ndjson(rows: int) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            for i in range(rows):
                yield json.dumps({"id": i, "name": f"Record {i}"}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


def fastapi_app() -> FastAPI:
    """FastAPI's own JSON Lines: the path operation is an async generator of dicts.

    The item type in the return annotation is what FastAPI's documentation shows; it lets FastAPI validate and
    serialize each item with pydantic's compiled serializer, its fastest path (without it, each item goes
    through ``jsonable_encoder`` and ``json.dumps``).
    """
    app = bare_app()

    @app.get("/ndjson")
    async def ndjson(rows: int) -> AsyncIterator[dict[str, Any]]:
        for i in range(rows):
            yield {"id": i, "name": f"Record {i}"}

    return app


def chute_app() -> FastAPI:
    """chute fed one record per iteration: the same per-item async generators, wrapped in ``RecordStream``."""
    app = bare_app()

    @app.get("/csv")
    async def csv(rows: int) -> RecordStream:
        return RecordStream(csv_rows(rows), format="csv", columns=CSV_COLUMNS)

    @app.get("/ndjson")
    async def ndjson(rows: int) -> RecordStream:
        return RecordStream(ndjson_records(rows), format="ndjson")

    return app


def chute_batched_app() -> FastAPI:
    """chute fed lists of records from a sync generator (``batched=True``), drained in a worker thread."""
    app = bare_app()

    @app.get("/csv")
    async def csv(rows: int) -> RecordStream:
        return RecordStream(csv_batches(rows), format="csv", columns=CSV_COLUMNS, batched=True)

    @app.get("/ndjson")
    async def ndjson(rows: int) -> RecordStream:
        return RecordStream(ndjson_batches(rows), format="ndjson", batched=True)

    return app


APPS: dict[str, Callable[[], FastAPI]] = {
    "seed": seed_app,
    "fastapi": fastapi_app,
    "chute": chute_app,
    "chute-batched": chute_batched_app,
}


def run_uvicorn(app: Any, port: int, *, http: Any = "httptools") -> None:
    """Serve ``app`` as every benchmark serves its contenders: uvicorn, uvloop, ``http`` (httptools, or chute's
    protocol built on it), one worker, loopback. The access log would add a write per request: it is off for all."""
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http=http, log_level="warning", access_log=False)


def serve(contender: str, port: int) -> None:
    run_uvicorn(APPS[contender](), port)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in APPS:
        sys.exit(f"usage: python -m benchmarks.apps {{{','.join(APPS)}}} PORT")
    serve(sys.argv[1], int(sys.argv[2]))
