"""FileStream through FastAPI: statuses, headers and bodies a client sees, in-process and on a real server."""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from chute import FileStream, protocol, zerocopy
from tests.conftest import ServeApp

CONTENT = bytes(range(256)) * 40  # 10,240 bytes
Protocol = type[asyncio.Protocol] | str


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "data.bin").write_bytes(CONTENT)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.txt").write_text("nested")
    (folder / "été.csv").write_text("a,b\r\n")
    (tmp_path / "secret.txt").write_text("outside the root")
    return folder


def app_for(root: Path, **options: object) -> FastAPI:
    app = FastAPI()

    @app.api_route("/download-file/{filename:path}", methods=["GET", "HEAD"])
    async def download(filename: str) -> FileStream:
        return FileStream(filename, root=root, **options)  # type: ignore[arg-type]

    return app


@pytest.fixture
def client(root: Path, serve_app: ServeApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app(app_for(root))) as real:
        yield real


@pytest.fixture
def aclient(root: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app_for(root, cache_control="public, max-age=60")), base_url="http://test"
    )


@pytest.mark.anyio
async def test_a_whole_file_with_its_validators(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        response = await aclient.get("/download-file/data.bin")
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["accept-ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]{24}"', response.headers["etag"])
    assert email.utils.parsedate_to_datetime(response.headers["last-modified"]) is not None
    assert response.headers["cache-control"] == "public, max-age=60"
    assert response.headers["content-disposition"] == 'attachment; filename="data.bin"'


@pytest.mark.anyio
async def test_head_gives_the_headers_of_get_and_no_body(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        get = await aclient.get("/download-file/data.bin")
        head = await aclient.head("/download-file/data.bin")
    assert head.status_code == 200
    assert head.content == b""
    assert dict(head.headers.items()) == dict(get.headers.items())


@pytest.mark.anyio
async def test_a_single_range(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        response = await aclient.get("/download-file/data.bin", headers={"range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == CONTENT[100:200]
    assert response.headers["content-range"] == f"bytes 100-199/{len(CONTENT)}"
    assert response.headers["content-length"] == "100"


@pytest.mark.anyio
async def test_several_ranges_are_multipart_byteranges(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        response = await aclient.get("/download-file/data.bin", headers={"range": "bytes=0-9, 200-209, -5, 205-214"})
    assert response.status_code == 206
    boundary = response.headers["content-type"].removeprefix("multipart/byteranges; boundary=")
    assert response.headers["content-length"] == str(len(response.content))
    body = response.content
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    parts = body[: -len(f"\r\n--{boundary}--\r\n")].split(f"--{boundary}\r\n".encode())[1:]
    found = []
    for part in parts:
        head, _, data = part.partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        match = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
        assert match is not None
        start, end = int(match[1]), int(match[2])
        assert data == CONTENT[start : end + 1]
        found.append((start, end))
    # Overlapping 200-209 and 205-214 are merged; parts come in ascending order.
    assert found == [(0, 9), (200, 214), (len(CONTENT) - 5, len(CONTENT) - 1)]


@pytest.mark.anyio
async def test_preconditions(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        first = await aclient.get("/download-file/data.bin")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        not_modified = await aclient.get("/download-file/data.bin", headers={"if-none-match": f'"x", {etag}'})
        since = await aclient.get("/download-file/data.bin", headers={"if-modified-since": modified})
        failed = await aclient.get("/download-file/data.bin", headers={"if-match": '"other"'})
        stale = await aclient.get(
            "/download-file/data.bin", headers={"if-unmodified-since": "Mon, 01 Jan 2001 00:00:00 GMT"}
        )
        if_range = await aclient.get("/download-file/data.bin", headers={"range": "bytes=0-0", "if-range": etag})
        weak = await aclient.get("/download-file/data.bin", headers={"range": "bytes=0-0", "if-range": f"W/{etag}"})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert since.status_code == 304
    assert failed.status_code == 412
    assert stale.status_code == 412
    assert (if_range.status_code, if_range.content) == (206, CONTENT[:1])
    assert (weak.status_code, len(weak.content)) == (200, len(CONTENT))


@pytest.mark.anyio
async def test_unsatisfiable_and_ignored_ranges(aclient: httpx.AsyncClient) -> None:
    async with aclient:
        unsatisfiable = await aclient.get("/download-file/data.bin", headers={"range": f"bytes={len(CONTENT)}-"})
        unknown_unit = await aclient.get("/download-file/data.bin", headers={"range": "lines=1-2"})
        malformed = await aclient.get("/download-file/data.bin", headers={"range": "bytes=9-2"})
        partly = await aclient.get("/download-file/data.bin", headers={"range": "bytes=0-1,99999-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(CONTENT)}"
    assert unknown_unit.status_code == 200
    assert malformed.status_code == 200
    assert (partly.status_code, partly.content) == (206, CONTENT[:2])


@pytest.mark.anyio
async def test_a_new_version_gets_a_new_etag_even_at_the_same_size(root: Path, aclient: httpx.AsyncClient) -> None:
    async with aclient:
        before = (await aclient.head("/download-file/data.bin")).headers["etag"]
        await anyio.sleep(0.01)
        (root / "data.bin").write_bytes(bytes(reversed(CONTENT)))
        after = (await aclient.head("/download-file/data.bin")).headers["etag"]
    assert before != after


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "..%2fsecret.txt",
        "sub/../../secret.txt",
        "%2e%2e/secret.txt",
        "..\\secret.txt",
        "CON",
        "missing.bin",
        "sub",
        "/etc/passwd",
    ],
)
def test_names_outside_the_root_or_missing_are_404(client: httpx.Client, name: str) -> None:
    response = client.get(f"/download-file/{name}")
    assert response.status_code == 404
    assert b"outside the root" not in response.content


def test_a_symlink_out_of_the_root_is_404(root: Path, client: httpx.Client) -> None:
    (root / "escape").symlink_to(root.parent / "secret.txt")
    (root / "inside").symlink_to(root / "data.bin")
    assert client.get("/download-file/escape").status_code == 404
    assert client.get("/download-file/inside").content == CONTENT


def test_content_disposition_is_safe_for_any_name(root: Path, client: httpx.Client, serve_app: ServeApp) -> None:
    (root / 'say "hi".txt').write_text("x")
    quoted = client.get("/download-file/say%20%22hi%22.txt").headers["content-disposition"]
    assert quoted == 'attachment; filename="say \\"hi\\".txt"'
    # A file name with CR/LF is refused outright; a download name with them (from the application) is cleaned.
    (root / "line\nbreak.txt").write_text("x")
    assert client.get("/download-file/line%0Abreak.txt").status_code == 404
    injected = FastAPI()

    @injected.get("/x")
    async def x() -> FileStream:
        return FileStream("data.bin", root=root, filename='evil"\r\nSet-Cookie: x=1.txt')

    response = httpx.get(f"{serve_app(injected)}/x")
    assert "set-cookie" not in response.headers
    assert response.headers["content-disposition"] == 'attachment; filename="evil\\"Set-Cookie: x=1.txt"'
    accented = client.get("/download-file/été.csv").headers["content-disposition"]
    assert accented == "attachment; filename=\"ete.csv\"; filename*=UTF-8''%C3%A9t%C3%A9.csv"


def test_nested_and_empty_files(client: httpx.Client) -> None:
    assert client.get("/download-file/sub/nested.txt").content == b"nested"
    empty = client.get("/download-file/empty.txt")
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")


# -- on a real server: files that change while they are sent
BIG = 32 * 1024 * 1024


def read_slowly_then(url: str, change: Callable[[], None]) -> int:
    """Read the first MiB, let ``change`` alter the file, read the rest; the bytes received (raises if cut)."""
    received = 0
    with httpx.stream("GET", url) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(1024 * 1024):
            received += len(chunk)
            if received >= 1024 * 1024 and change is not None:
                change()
                change = None  # type: ignore[assignment]
    return received


PROTOCOLS = [pytest.param("httptools", id="pread"), pytest.param(protocol.HttpToolsProtocol, id="zero-copy")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", ["shrink", "rewrite", "grow"])
def test_a_file_that_changes_mid_transfer_aborts_the_connection(
    tmp_path: Path, serve_app: ServeApp, how: str, protocol: Protocol
) -> None:
    path = tmp_path / "moving.bin"
    path.write_bytes(os.urandom(BIG))
    base_url = serve_app(app_for(tmp_path), protocol)

    def change() -> None:
        if how == "shrink":
            os.truncate(path, BIG // 2)
        elif how == "rewrite":
            with path.open("r+b") as file:
                file.seek(BIG - 10)
                file.write(b"0123456789")
        else:
            with path.open("ab") as file:
                file.write(b"more")

    with pytest.raises(httpx.RemoteProtocolError):
        read_slowly_then(f"{base_url}/download-file/moving.bin", change)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unchanged_file_streams_whole_on_a_real_server(
    tmp_path: Path, serve_app: ServeApp, protocol: Protocol
) -> None:
    data = os.urandom(BIG)
    (tmp_path / "still.bin").write_bytes(data)
    base_url = serve_app(app_for(tmp_path), protocol)
    assert read_slowly_then(f"{base_url}/download-file/still.bin", lambda: None) == BIG
    whole = httpx.get(f"{base_url}/download-file/still.bin")
    assert whole.content == data
    assert httpx.get(f"{base_url}/download-file/still.bin", headers={"range": "bytes=-1000"}).content == data[-1000:]
    middle = httpx.get(f"{base_url}/download-file/still.bin", headers={"range": "bytes=1000000-3999999"})
    assert (middle.status_code, middle.content) == (206, data[1_000_000:4_000_000])
    head = httpx.head(f"{base_url}/download-file/still.bin")
    assert (head.headers["content-length"], head.content) == (str(BIG), b"")


def test_zero_copy_sends_are_offered_and_cut_stalled_clients(tmp_path: Path, serve_app: ServeApp) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(BIG))
    app = FastAPI()
    seen: list[object] = []

    @app.get("/stalled")
    async def stalled(request: Request) -> FileStream:
        seen.append(request.scope.get("extensions", {}).get(zerocopy.EXTENSION))
        return FileStream("big.bin", root=tmp_path, send_timeout=0.5)

    base_url = serve_app(app, protocol.HttpToolsProtocol)
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /stalled HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(2.0)  # read nothing: the send deadline passes and the server cuts the connection
        started = time.monotonic()
        # The cut is a reset, not a close that would drain megabytes of kernel buffers at the stalled pace.
        with pytest.raises(ConnectionResetError):
            drain(client)
        assert time.monotonic() - started < 2.0
    assert seen == [{}]


def drain(client: socket.socket) -> None:
    while client.recv(1 << 20):
        pass
