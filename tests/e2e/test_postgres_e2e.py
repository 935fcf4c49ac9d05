"""``chute serve --database postgresql://...``: the service exporting from a real PostgreSQL that ``chute load-data``
filled, with the same rows the embedded SQLite dataset holds."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SERVICE_ROWS, Service, running_service
from tests.pg import throwaway_database


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with throwaway_database("chute_e2e") as url:
        load = [sys.executable, "-m", "chute", "load-data", "--database", url, "--rows", str(SERVICE_ROWS)]
        result = subprocess.run(load, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert f"loaded {SERVICE_ROWS:,} orders" in " ".join(result.stderr.split())  # rich wraps long lines
        again = subprocess.run(load, capture_output=True, text=True, timeout=60, check=False)
        assert f"already holds {SERVICE_ROWS:,} orders" in " ".join(again.stderr.split())
        folder: Path = tmp_path_factory.mktemp("pg-data")
        with running_service(folder, "--database", url) as running:
            yield running


def records(body: bytes) -> list[dict[str, Any]]:
    items = [json.loads(line) for line in body.splitlines()]
    return [item for item in items if not any(key.startswith("@") for key in item)]


def test_the_datasets_are_the_databases_tables(pg_service: Service) -> None:
    listing = httpx.get(f"{pg_service.base_url}/exports").json()
    assert "chute_meta" not in json.dumps(listing)
    assert "orders" in json.dumps(listing)
    assert "customers" in json.dumps(listing)
    assert not (Path(pg_service.log_path).parent / "chute.sqlite3").exists()  # nothing embedded was generated


def test_ndjson_and_csv_hold_the_embedded_datasets_rows(pg_service: Service, service: Service) -> None:
    url = "/exports/orders"
    from_pg = httpx.get(pg_service.base_url + url, params={"format": "ndjson"}, timeout=30)
    from_sqlite = httpx.get(service.base_url + url, params={"format": "ndjson"}, timeout=30)
    assert from_pg.status_code == 200
    assert from_pg.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert from_pg.content == from_sqlite.content  # byte for byte: same rows, same types
    assert len(records(from_pg.content)) == SERVICE_ROWS

    csv_pg = httpx.get(pg_service.base_url + url, params={"format": "csv"}, timeout=30)
    csv_sqlite = httpx.get(service.base_url + url, params={"format": "csv"}, timeout=30)
    assert csv_pg.status_code == 200
    assert csv_pg.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv_pg.headers["content-disposition"].startswith("attachment")
    assert csv_pg.content.count(b"\n") == SERVICE_ROWS + 1  # COPY's own CSV: the header, then one line per row
    assert list(csv.reader(io.StringIO(csv_pg.text))) == list(csv.reader(io.StringIO(csv_sqlite.text)))

    limited = httpx.get(pg_service.base_url + url, params={"format": "csv", "limit": 3})
    assert limited.text.splitlines()[1:] == csv_sqlite.text.splitlines()[1:4]


def test_an_ndjson_export_resumes_after_a_token(pg_service: Service) -> None:
    url = f"{pg_service.base_url}/exports/orders"
    full = httpx.get(url, params={"resumable": "true"}, timeout=30)
    lines = [json.loads(line) for line in full.content.splitlines()]
    resumes = [(i, item["@resume"]) for i, item in enumerate(lines) if "@resume" in item]
    assert len(resumes) >= 2
    cut, token = resumes[1]
    before = records(b"\n".join(json.dumps(item).encode() for item in lines[:cut]))
    rest = httpx.get(url, params={"resumable": "true", "after": token}, timeout=30)
    assert rest.status_code == 200
    assert before + records(rest.content) == records(full.content)
    assert [row["id"] for row in before + records(rest.content)] == list(range(1, SERVICE_ROWS + 1))
