"""``GET /stream-external`` on a real ``chute serve``, its upstreams named in ``CHUTE_UPSTREAMS``.

The upstream is the misbehaving raw server of ``tests/responses/test_proxy.py`` (gzip, ranges, a reset mid-body,
an endless body); the SSRF names point at loopback in other spellings and at the cloud metadata address, none
of them with ``allow_private``, so the service must refuse them without a single connection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Service, running_service
from tests.responses.test_proxy import DATA, GZ, PARTIAL, TEXT, RawUpstream, raw_get, wait_for

REFUSED = {
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "loopback": "http://127.0.0.1:{port}/data",
    "short": "http://127.1:{port}/data",
    "decimal": "http://2130706433:{port}/data",
    "mapped": "http://[::ffff:7f00:1]:{port}/data",
}
"""Upstreams without ``allow_private`` whose addresses are loopback or link-local: each is a 502, never a request.
(The allowlisted raw upstream is reached as ``localhost``, so none of these spellings is its origin.)"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    server = RawUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, upstream: RawUpstream) -> Iterator[Service]:
    named: dict[str, dict[str, object]] = {
        path: {"url": upstream.url(f"/{path}", host="localhost"), "allow_private": True}
        for path in ("data", "gzip", "reset", "forever")
    }
    named |= {name: {"url": url.format(port=upstream.port)} for name, url in REFUSED.items()}
    named["self-file"] = {"url": "http://{self}/download-file/big-1GiB.bin", "allow_private": True}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHUTE_UPSTREAMS", json.dumps(named))
        patch.setenv("CHUTE_UPSTREAM_READ_TIMEOUT", "2")
        with running_service(Path(tmp_path_factory.mktemp("proxy"))) as running:
            yield running


def external(service: Service, source: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{service.base_url}/stream-external", params={"source": source}, headers=headers, timeout=30)


def test_a_body_and_its_ranges_are_relayed(service: Service) -> None:
    whole = external(service, "data")
    assert whole.status_code == 200
    assert whole.content == DATA
    assert whole.headers["etag"] == '"v1"'
    assert "set-cookie" not in whole.headers
    ranged = external(service, "data", {"range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.content == DATA[100:200]


def test_a_gzip_body_is_passed_through_as_sent(service: Service) -> None:
    status, headers, body = raw_get(service.base_url, "/stream-external?source=gzip", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert body == GZ
    assert external(service, "gzip", {"accept-encoding": "gzip"}).content == TEXT


def test_its_own_file_through_itself(service: Service) -> None:
    ranged = external(service, "self-file", {"range": "bytes=1073741800-"})
    assert ranged.status_code == 206
    assert ranged.content == bytes(24)
    assert ranged.headers["content-range"] == f"bytes 1073741800-1073741823/{1 << 30}"


def test_an_upstream_reset_mid_body_aborts_the_response(service: Service) -> None:
    status, headers, body = raw_get(service.base_url, "/stream-external?source=reset")
    assert status == 200
    assert headers["content-length"] == str(len(DATA))
    assert body == DATA[:PARTIAL]  # short against Content-Length: never an error text appended
    with pytest.raises(httpx.RemoteProtocolError):
        external(service, "reset")


@pytest.mark.parametrize("source", sorted(REFUSED))
def test_local_and_metadata_addresses_are_refused_without_a_request(
    service: Service, upstream: RawUpstream, source: str
) -> None:
    before = len(upstream.requests)
    response = external(service, source)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "the upstream is not one this server may reach"
    assert len(upstream.requests) == before


def test_a_client_that_leaves_closes_the_upstream_at_once(service: Service, upstream: RawUpstream) -> None:
    port = int(service.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stream-external?source=forever HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 1 << 20:
            received += len(sock.recv(1 << 16))
        left = time.monotonic()
    wait_for(lambda: "/forever" in upstream.closed_at, timeout=3)
    assert upstream.closed_at["/forever"] - left < 1.0


def test_an_unknown_source_is_404(service: Service) -> None:
    response = external(service, "http://169.254.169.254/")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
