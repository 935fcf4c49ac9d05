"""Resumable exports of the reference service: resume points, ``after=`` tokens, limits across resumes, tampered
tokens, and ``chute get`` through a connection that is cut several times."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chute.cli import app
from tests.cutting import CuttingProxy
from tests.e2e.conftest import SERVICE_ROWS, Service

runner = CliRunner()


def lines_of(body: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    """Data records, and control lines with the number of records before each."""
    records: list[dict[str, Any]] = []
    controls: list[tuple[int, dict[str, Any]]] = []
    for line in body.splitlines():
        item = json.loads(line)
        if any(key.startswith("@") for key in item):
            controls.append((len(records), item))
        else:
            records.append(item)
    return records, controls


def test_a_resumable_export_marks_resume_points_and_its_end(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/exports/orders", params={"resumable": "true", "format": "ndjson"})
    assert response.status_code == 200
    assert response.headers["chute-resume"] == "after"
    records, controls = lines_of(response.content)
    assert [r["id"] for r in records] == list(range(1, SERVICE_ROWS + 1))
    assert controls[-1] == (SERVICE_ROWS, {"@end": {"records": SERVICE_ROWS}})
    resumes = [(n, c["@resume"]) for n, c in controls[:-1]]
    assert len(resumes) >= 3


def test_after_a_token_the_export_continues_with_the_next_record(service: Service) -> None:
    url = f"{service.base_url}/exports/orders"
    full = httpx.get(url, params={"resumable": "true"})
    records, controls = lines_of(full.content)
    n, control = controls[1]
    rest = httpx.get(url, params={"resumable": "true", "after": control["@resume"]})
    assert rest.status_code == 200
    continued, rest_controls = lines_of(rest.content)
    assert records[:n] + continued == records
    assert rest_controls[-1][1] == {"@end": {"records": SERVICE_ROWS - n}}


def test_a_limit_counts_the_rows_of_every_part(service: Service) -> None:
    url = f"{service.base_url}/exports/orders"
    first, controls = lines_of(httpx.get(url, params={"resumable": "true", "limit": 3000}).content)
    assert len(first) == 3000
    n, control = controls[0]
    rest, _ = lines_of(httpx.get(url, params={"resumable": "true", "limit": 3000, "after": control["@resume"]}).content)
    assert first[:n] + rest == first


@pytest.mark.parametrize(("dataset", "change"), [("orders", True), ("customers", False)])
def test_a_changed_or_foreign_token_is_a_400_problem(service: Service, dataset: str, change: bool) -> None:
    _, controls = lines_of(httpx.get(f"{service.base_url}/exports/orders", params={"resumable": "true"}).content)
    token = controls[0][1]["@resume"]
    if change:
        token = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    response = httpx.get(f"{service.base_url}/exports/{dataset}", params={"after": token})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "resume token" in response.json()["detail"]


def test_csv_and_json_take_a_token_but_carry_no_resume_points(service: Service) -> None:
    url = f"{service.base_url}/exports/orders"
    _, controls = lines_of(httpx.get(url, params={"resumable": "true"}).content)
    n, control = controls[0]
    response = httpx.get(url, params={"format": "csv", "after": control["@resume"], "resumable": "true"})
    lines = response.text.splitlines()
    assert lines[0].startswith("id,")
    assert [int(line.split(",", 1)[0]) for line in lines[1:]] == list(range(n + 1, SERVICE_ROWS + 1))


def test_chute_get_resumes_an_export_cut_several_times(service: Service, tmp_path: Path) -> None:
    url_path = "/exports/orders"
    expected = httpx.get(f"{service.base_url}{url_path}", params={"format": "ndjson"}).content
    # Cut where a fifth of the body has come, as it comes (compressed: httpx accepts it, the service compresses).
    with httpx.stream("GET", f"{service.base_url}{url_path}", params={"resumable": "true", "format": "ndjson"}) as r:
        wire = sum(len(chunk) for chunk in r.iter_raw())
    proxy = CuttingProxy(int(service.base_url.rsplit(":", 1)[1]), cuts=4, after=wire // 5)
    target = tmp_path / "orders.ndjson"
    try:
        result = runner.invoke(app, ["get", f"http://127.0.0.1:{proxy.port}{url_path}", "-o", str(target)])
    finally:
        proxy.close()
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert len(data.splitlines()) == SERVICE_ROWS
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    resumed = re.search(rf"\({SERVICE_ROWS:,} records, resumed (\d+) times\)", result.output)
    assert resumed is not None, result.output
    assert int(resumed.group(1)) >= 2
