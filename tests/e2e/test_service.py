"""The reference service over real HTTP: ``chute serve`` in a subprocess on a free port."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from chute.service.work import compute_batch
from tests.e2e.conftest import SERVICE_ROWS, Service, running_service


def test_stream_csv_is_the_briefs_rows_as_rfc4180(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/stream-csv", params={"rows": 1000})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["id", "name", "value"]
    assert rows[1:] == [[str(i), f"item_{i}", repr(i * 1.5)] for i in range(1000)]


@pytest.mark.parametrize("rows", [0, 1, 4097])
def test_stream_json_is_one_valid_array(service: Service, rows: int) -> None:
    response = httpx.get(f"{service.base_url}/stream-json", params={"rows": rows})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    items = json.loads(response.content)
    assert len(items) == rows
    if rows:
        assert items[0] == {"id": 0, "name": "Object 0", "timestamp": "2023-10-27T10:00:00Z"}
        assert items[-1]["id"] == rows - 1


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/x-ndjson"),
        ("application/jsonl", "application/jsonl"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/json, application/jsonl;q=0.9", "application/jsonl"),
    ],
)
def test_stream_json_lines_negotiates_its_media_type(service: Service, accept: str | None, media_type: str) -> None:
    headers = {"accept": accept} if accept else {}
    response = httpx.get(f"{service.base_url}/stream-json-lines", params={"rows": 3}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
    assert [json.loads(line) for line in response.text.splitlines()] == [
        {"id": i, "name": f"Record {i}"} for i in range(3)
    ]


def test_stream_json_lines_answers_406_with_the_supported_types(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/stream-json-lines", headers={"accept": "text/csv"})
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/problem+json"
    assert "application/jsonl" in response.json()["supported"]


def test_stream_batches_streams_each_batch_in_order(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/stream-batches", params={"num_batches": 7, "batch_size": 50}, timeout=30)
    lines = response.text.splitlines()
    assert len(lines) == 7
    for number, line in enumerate(lines):
        batch = json.loads(line)
        assert len(batch) == 50
        assert batch == json.loads(bytes(compute_batch(number, 50)))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/stream-csv", {"rows": -1}),
        ("/stream-csv", {"rows": "many"}),
        ("/stream-json", {"rows": 10**9}),
        ("/stream-batches", {"num_batches": 0}),
        ("/stream-batches", {"batch_size": 10**7}),
        ("/exports/orders", {"format": "xml"}),
        ("/exports/orders", {"limit": -3}),
    ],
)
def test_bad_query_parameters_get_422(service: Service, path: str, params: dict[str, object]) -> None:
    response = httpx.get(f"{service.base_url}{path}", params=params)  # type: ignore[arg-type]
    assert response.status_code == 422


def test_exports_lists_the_datasets(service: Service) -> None:
    datasets = {d["name"]: d for d in httpx.get(f"{service.base_url}/exports").json()}
    assert set(datasets) == {"orders", "customers"}
    assert datasets["orders"]["rows"] == SERVICE_ROWS
    assert datasets["orders"]["columns"][0] == "id"
    assert datasets["customers"]["rows"] == max(10, SERVICE_ROWS // 100)


@pytest.mark.parametrize(
    ("params", "headers", "media_type"),
    [
        ({"format": "csv"}, {}, "text/csv"),
        ({}, {"accept": "text/csv"}, "text/csv"),
        ({}, {"accept": "application/json"}, "application/json"),
        ({}, {}, "application/x-ndjson"),
        ({"format": "jsonl"}, {"accept": "text/csv"}, "application/jsonl"),
    ],
)
def test_export_formats_agree(
    service: Service, params: dict[str, str], headers: dict[str, str], media_type: str
) -> None:
    response = httpx.get(f"{service.base_url}/exports/orders", params={**params, "limit": 50}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
    extension = {"text/csv": "csv", "application/json": "json"}.get(
        media_type, "ndjson" if "nd" in media_type else "jsonl"
    )
    assert response.headers["content-disposition"] == f'attachment; filename="orders.{extension}"'
    if media_type == "text/csv":
        reader = csv.DictReader(io.StringIO(response.text))
        records: list[dict[str, object]] = [dict(row) for row in reader]
    elif media_type == "application/json":
        records = json.loads(response.content)
    else:
        records = [json.loads(line) for line in response.text.splitlines()]
    assert [int(str(r["id"])) for r in records] == list(range(1, 51))
    # Every format carries the same text for the same value (CSV cells are all text).
    ndjson = [json.loads(line) for line in httpx.get(f"{service.base_url}/exports/orders?limit=50").text.splitlines()]
    assert [{k: str(v) for k, v in r.items()} for r in records] == [{k: str(v) for k, v in r.items()} for r in ndjson]


def test_export_without_limit_streams_the_whole_table(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/exports/orders", params={"format": "csv"})
    rows = list(csv.reader(io.StringIO(response.text)))
    assert len(rows) == SERVICE_ROWS + 1
    assert [int(r[0]) for r in rows[1:]] == list(range(1, SERVICE_ROWS + 1))


def test_unknown_dataset_is_a_404_problem(service: Service) -> None:
    response = httpx.get(f"{service.base_url}/exports/chute_meta")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_openapi_documents_each_stream(service: Service) -> None:
    spec = httpx.get(f"{service.base_url}/openapi.json").json()
    csv_content = spec["paths"]["/stream-csv"]["get"]["responses"]["200"]["content"]
    assert set(csv_content["text/csv"]["itemSchema"]["properties"]) == {"id", "name", "value"}
    json_content = spec["paths"]["/stream-json"]["get"]["responses"]["200"]["content"]["application/json"]
    assert set(json_content["schema"]["items"]["properties"]) == {"id", "name", "timestamp"}
    lines = spec["paths"]["/stream-json-lines"]["get"]["responses"]["200"]["content"]
    assert {"application/x-ndjson", "application/jsonl"} <= set(lines)
    exports = spec["paths"]["/exports/{name}"]["get"]["responses"]["200"]["content"]
    assert {"text/csv", "application/x-ndjson", "application/json", "application/vnd.apache.arrow.stream"} <= set(
        exports
    )


@pytest.mark.parametrize(
    ("path", "python", "javascript"),
    [
        ("/stream-json-lines", "iter_lines()", "TextDecoderStream"),
        ("/stream-csv", "csv.reader", "TextDecoderStream"),
        ("/events/{topic}", "chute.client.events", "new EventSource"),
        ("/stream-logs", "chute.client.events", "new EventSource"),
        ("/download-file/{filename}", "chute.client.download", "download"),
        ("/exports/{name}", "iter_lines()", "JSON.parse"),
    ],
)
def test_openapi_shows_how_to_consume_each_stream(service: Service, path: str, python: str, javascript: str) -> None:
    spec = httpx.get(f"{service.base_url}/openapi.json").json()
    operation = spec["paths"][path]["get"]
    samples = {sample["lang"]: sample["source"] for sample in operation["x-codeSamples"]}
    url = service.base_url + path.replace("{", "").replace("}", "")
    assert python in samples["Python"]
    assert javascript in samples["JavaScript"]
    assert f'"{url}"' in samples["Python"]
    assert f'"{url}"' in samples["JavaScript"]
    compile(samples["Python"], path, "exec")  # the example is valid Python
    assert "```python" in operation["description"]
    assert "```javascript" in operation["description"]
    assert "x-codeSamples" not in spec["paths"]["/healthz"]["get"]


def test_healthz_answers_while_a_client_stalls_a_stream(service: Service) -> None:
    # A client that asks for 100M rows and never reads fills the socket buffers; the loop must stay free.
    address = urlsplit(service.base_url)
    before = service.log().count("client left after")
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80)) as stalled:
        stalled.sendall(b"GET /stream-csv?rows=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        started = time.monotonic()
        assert httpx.get(f"{service.base_url}/healthz", timeout=5).json() == {"status": "ok"}
        assert time.monotonic() - started < 1.0
    # The stalled stream ends once its client is gone (and before the next test counts the streams that end).
    deadline = time.monotonic() + 5
    while service.log().count("client left after") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.log().count("client left after") == before + 1


def test_a_client_that_leaves_stops_the_stream(service: Service) -> None:
    address = urlsplit(service.base_url)
    before = service.log().count("client left after")
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80)) as client:
        client.sendall(b"GET /stream-csv?rows=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
    deadline = time.monotonic() + 1.5
    while service.log().count("client left after") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.log().count("client left after") == before + 1


def test_stopping_the_service_leaves_no_worker_processes(tmp_path: Path) -> None:
    with running_service(tmp_path) as running:
        httpx.get(f"{running.base_url}/stream-batches", params={"num_batches": 4, "batch_size": 10}, timeout=30)
        children = psutil.Process(running.process.pid).children(recursive=True)
        assert children  # the batch workers (and the forkserver that starts them) are running
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_a_csv_export_speaks_the_locale_asked_for(service: Service) -> None:
    url = f"{service.base_url}/exports/orders"
    machine = httpx.get(url, params={"format": "csv", "limit": 20})
    assert "content-language" not in machine.headers
    assert "Accept-Language" in machine.headers["vary"]
    plain = list(csv.DictReader(io.StringIO(machine.text)))
    german = httpx.get(url, params={"format": "csv", "limit": 20, "locale": "de-DE", "bom": "true"})
    assert german.headers["content-language"] == "de-DE"
    assert german.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(german.content.decode("utf-8-sig")), delimiter=";"))
    assert [r["id"] for r in rows] == [r["id"] for r in plain]
    for local, iso in zip(rows, plain, strict=True):
        assert local["total"] == iso["total"].replace(".", ",")
        when = iso["created_at"]  # 2023-10-27T10:00:07Z
        assert local["created_at"] == f"{when[8:10]}.{when[5:7]}.{when[:4]} {when[11:19]}"
    french = httpx.get(url, params={"format": "csv", "limit": 20}, headers={"accept-language": "fr-CH, en;q=0.5"})
    assert french.headers["content-language"] == "fr-CH"
    unknown = httpx.get(url, params={"format": "csv", "limit": 20, "locale": "xx-YY"})
    assert unknown.status_code == 200
    assert unknown.content == machine.content
    assert "content-language" not in unknown.headers
    ndjson = httpx.get(url, params={"limit": 3, "locale": "de-DE"})  # JSON is for programs: never localized
    assert [json.loads(line)["total"] for line in ndjson.text.splitlines()] == [r["total"] for r in plain[:3]]


def test_an_export_as_arrow_has_typed_columns(service: Service) -> None:
    import pyarrow as pa
    import pyarrow.ipc

    url = f"{service.base_url}/exports/orders"
    response = httpx.get(url, params={"limit": 3000}, headers={"accept": "application/vnd.apache.arrow.stream"})
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert response.headers["content-disposition"] == 'attachment; filename="orders.arrows"'
    table = pyarrow.ipc.open_stream(response.content).read_all()
    assert table.num_rows == 3000
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert pa.types.is_decimal(table.schema.field("total").type)
    first = json.loads(httpx.get(url, params={"limit": 1}).text)
    row = table.slice(0, 1).to_pylist()[0]
    assert str(row["total"]) == first["total"]
    assert row["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ") == first["created_at"]


def test_batch_workers_yield_the_cpu_to_the_server(service: Service) -> None:
    assert httpx.get(f"{service.base_url}/stream-batches", params={"num_batches": 2, "batch_size": 10}).is_success
    server = psutil.Process(service.process.pid)
    niceness = {child.nice() for child in server.children(recursive=True)}
    assert server.nice() + 10 in niceness  # the pool's workers; the fork server itself keeps the server's


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_exports_are_compressed_as_the_client_accepts(service: Service, coding: str) -> None:
    url = f"{service.base_url}/exports/orders"
    plain = httpx.get(url, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with httpx.stream("GET", url, headers={"accept-encoding": f"{coding}, identity;q=0.1"}) as response:
        wire = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == coding
        assert "Accept-Encoding" in response.headers["vary"]
    assert len(wire) < len(plain.content) / 4
    decoded = httpx.Response(200, headers={"content-encoding": coding}, content=wire).content
    assert decoded == plain.content


def test_a_compressed_download_weakens_its_etag_and_offers_no_ranges(service: Service) -> None:
    url = f"{service.base_url}/download-file/orders-extract.csv"
    plain = httpx.get(url, headers={"accept-encoding": "identity"})
    assert plain.headers["accept-ranges"] == "bytes"
    assert not plain.headers["etag"].startswith("W/")
    packed = httpx.get(url, headers={"accept-encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["etag"] == "W/" + plain.headers["etag"]
    assert "accept-ranges" not in packed.headers
    assert packed.content == plain.content
    part = httpx.get(url, headers={"accept-encoding": "gzip", "range": "bytes=0-99"})
    assert part.status_code == 206
    assert "content-encoding" not in part.headers  # a range is of the identity bytes
    assert part.content == plain.content[:100]


def test_live_feeds_are_never_compressed(service: Service) -> None:
    with httpx.stream("GET", f"{service.base_url}/stream-logs", headers={"accept-encoding": "gzip"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers
