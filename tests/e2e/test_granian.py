"""The reference service on granian, whose ``http.response.pathsend`` lets it send whole files itself."""

from __future__ import annotations

import csv
import io

import httpx

from tests.e2e.conftest import Service


def test_files_and_records_on_granian(granian_service: Service) -> None:
    base = granian_service.base_url
    listing = {f["name"]: f for f in httpx.get(f"{base}/files/").json()}
    readme = httpx.get(f"{base}/download-file/readme.txt")
    assert readme.status_code == 200
    assert readme.headers["etag"] == listing["readme.txt"]["etag"]
    assert len(readme.content) == listing["readme.txt"]["size"]
    part = httpx.get(f"{base}/download-file/readme.txt", headers={"range": "bytes=0-4"})
    assert (part.status_code, part.content) == (206, readme.content[:5])
    rows = list(csv.reader(io.StringIO(httpx.get(f"{base}/stream-csv", params={"rows": 100}).text)))
    assert rows[-1] == ["99", "item_99", "148.5"]
