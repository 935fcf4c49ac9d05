"""Resumable NDJSON exports: a connection killed several times mid-stream (by a proxy that cuts after some bytes,
mid-line) still ends with every record once, in order, checked by count and checksum."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query

from chute import RecordStream
from chute.client.exports import export
from chute.exceptions import BadRequest, DownloadError
from chute.problems import problem_response
from chute.tokens import ResumeTokens
from tests.conftest import ServeApp
from tests.cutting import CuttingProxy

ROWS = 50_000
TOKENS = ResumeTokens(b"s" * 32)


def rows_after(after: int, rows: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(after + 1, rows + 1, 1000):
        yield [{"id": i, "name": f"row {i}", "note": "x" * (i % 50)} for i in range(start, min(start + 1000, rows + 1))]


def export_app(rows: int = ROWS) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(BadRequest)
    async def bad_request(request: Any, exc: BadRequest) -> Any:
        return problem_response(exc)

    @app.get("/export")
    async def endpoint(
        resumable: bool = False, after: Annotated[str | None, Query()] = None, format: str = "ndjson"
    ) -> RecordStream:
        start = TOKENS.read("rows", after).key if after is not None else 0
        assert isinstance(start, int)
        return RecordStream(
            rows_after(start, rows),
            format=format,
            batched=True,
            chunk_size=8192,
            end_record=resumable,
            resume_token=(lambda record, count: TOKENS.issue("rows", record["id"], start + count))
            if resumable
            else None,
        )

    @app.get("/csv")
    async def csv_only() -> RecordStream:
        return RecordStream(rows_after(0, 10), format="csv", batched=True, columns=("id", "name", "note"))

    return app


def expected_file(rows: int = ROWS) -> bytes:
    records = [record for batch in rows_after(0, rows) for record in batch]
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def test_an_export_cut_five_times_ends_complete_without_gap_or_duplicate(serve_app: ServeApp, tmp_path: Path) -> None:
    upstream = serve_app(export_app())
    proxy = CuttingProxy(int(upstream.rsplit(":", 1)[1]), cuts=5, after=150_000)  # mid-record, mid-chunk
    try:
        result = export(f"http://127.0.0.1:{proxy.port}/export", tmp_path / "rows.ndjson")
    finally:
        proxy.close()
    data = (tmp_path / "rows.ndjson").read_bytes()
    expected = expected_file()
    assert (result.records, len(data.splitlines())) == (ROWS, ROWS)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert (result.attempts, result.resumed) == (6, 5)
    assert not (tmp_path / "rows.ndjson.part").exists()


def test_resume_lines_follow_every_chunk_and_name_its_last_record(serve_app: ServeApp) -> None:
    body = httpx.get(f"{serve_app(export_app(5000))}/export?resumable=true").content
    lines = body.splitlines()
    controls = [(n, json.loads(line)) for n, line in enumerate(lines) if line.startswith(b'{"@')]
    assert json.loads(lines[-1]) == {"@end": {"records": 5000}}
    resumes = [(n, c["@resume"]) for n, c in controls if "@resume" in c]
    assert len(resumes) > 3  # 8 KiB chunks
    for n, token in resumes:
        record = json.loads(lines[n - 1])
        assert TOKENS.read("rows", token) == (record["id"], record["id"])  # ids count from 1


def test_without_resumable_the_body_is_plain_records(serve_app: ServeApp) -> None:
    body = httpx.get(f"{serve_app(export_app(3000))}/export").content
    assert body == expected_file(3000)


def test_a_tampered_token_is_a_400(serve_app: ServeApp) -> None:
    token = TOKENS.issue("rows", 10)
    changed = token[:3] + ("A" if token[3] != "A" else "B") + token[4:]
    response = httpx.get(f"{serve_app(export_app())}/export", params={"after": changed})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_an_export_that_is_not_ndjson_is_refused(serve_app: ServeApp, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="text/csv, not NDJSON"):
        export(f"{serve_app(export_app(10))}/csv", tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_gets_further_is_given_up_on(serve_app: ServeApp, tmp_path: Path) -> None:
    upstream = serve_app(export_app())
    proxy = CuttingProxy(int(upstream.rsplit(":", 1)[1]), cuts=1000, after=100)  # before the first resume line
    try:
        with pytest.raises(DownloadError, match="gave up after 3 attempts"):
            export(f"http://127.0.0.1:{proxy.port}/export", tmp_path / "rows.ndjson", attempts=3)
    finally:
        proxy.close()
