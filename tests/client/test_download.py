"""``chute.client.download`` against real servers (FileStream and plain Starlette responses on uvicorn), and
against ``httpx.MockTransport`` for the misbehaviours no real server here produces."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chute import ChuteError, ClientError, DownloadError, FileStream, IntegrityError
from chute.client import DownloadResult, download, filename_from, parse_repr_digest, safe_filename
from chute.digests import DigestCache
from tests.conftest import free_port

ServeApp = Callable[[ASGIApp], str]
SIZE = 3 * 1024 * 1024 + 12_345  # several client writes, and not a multiple of any chunk size
CUT = 1_234_567  # not a multiple of the client's write size: the bytes still buffered must be kept too


class Cut(Exception):
    """Raised by :class:`Recorder` to abort a response after some body bytes."""


@dataclasses.dataclass
class Exchange:
    """One request as the server saw it, and what it answered."""

    headers: dict[str, str]
    status: int = 0
    response_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body_bytes: int = 0


class Recorder:
    """Passes requests to ``app``, records them, and can abort the n-th response after ``cuts[n]`` body bytes
    (the connection is closed: the client sees fewer bytes than ``Content-Length``) or rewrite its headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cuts: list[int | None] | None = None,
        edit: Callable[[dict[bytes, bytes]], None] | None = None,
    ) -> None:
        self.app = app
        self.cuts = list(cuts or [])
        self.edit = edit
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        exchange = Exchange({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        self.exchanges.append(exchange)
        cut = self.cuts.pop(0) if self.cuts else None

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message["headers"])
                if self.edit is not None:
                    self.edit(headers)
                exchange.status = message["status"]
                exchange.response_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
                message = {**message, "headers": list(headers.items())}
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if cut is not None and exchange.body_bytes + len(body) > cut:
                    keep = cut - exchange.body_bytes
                    await send({"type": "http.response.body", "body": body[:keep], "more_body": True})
                    exchange.body_bytes += keep
                    raise Cut
                exchange.body_bytes += len(body)
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        except* Cut:
            pass  # returning mid-body makes uvicorn close the connection


def file_app(root: Path, **options: Any) -> ASGIApp:
    """FileStream for the path of every request, over ``root``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await FileStream(scope["path"].removeprefix("/"), root=root, **options)(scope, receive, send)

    return app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "data.bin").write_bytes(os.urandom(SIZE))
    return folder


@pytest.fixture
def digests() -> Iterator[DigestCache]:
    cache = DigestCache()
    yield cache
    cache.close()


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(target.name + "."))


def sidecar(target: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(target.with_name(target.name + ".part.json").read_bytes())
    return data


def sha256_field(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


class Stop(Exception):
    """Raised by progress callbacks to stop a download the way a caller's exception (or Ctrl-C) would."""


def stop_after(limit: int) -> Callable[[int, int | None], None]:
    def progress(done: int, total: int | None) -> None:
        if done >= limit:
            raise Stop

    return progress


# -- real servers


def test_a_whole_file_in_one_request(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    recorder = Recorder(file_app(root))
    target = tmp_path / "out.bin"
    calls: list[tuple[int, int | None]] = []
    result = download(f"{serve_app(recorder)}/data.bin", target, progress=lambda d, t: calls.append((d, t)))
    assert target.read_bytes() == (root / "data.bin").read_bytes()
    assert (result.size, result.resumed_from, result.transferred, result.restarted) == (SIZE, 0, SIZE, False)
    assert (result.statuses, result.digest_verified, result.path) == ((200,), False, target)
    assert leftovers(target) == []  # no .part, no sidecar
    [exchange] = recorder.exchanges
    assert "range" not in exchange.headers
    assert exchange.headers["accept-encoding"] == "identity"
    # Once at the start, then per write of at most 1 MiB plus one socket read: few calls, all increasing.
    assert calls[0] == (0, SIZE)
    assert calls[-1] == (SIZE, SIZE)
    assert 4 <= len(calls) <= 6
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_cut_connection_keeps_the_part_and_the_next_run_fetches_only_the_rest(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    recorder = Recorder(file_app(root), cuts=[CUT])
    url = f"{serve_app(recorder)}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError, match="run again to resume") as caught:
        download(url, target)
    part = target.with_name("out.bin.part")
    assert caught.value.partial == part
    assert caught.value.status is None
    assert not target.exists()
    assert part.stat().st_size == CUT  # every byte received was kept, the buffered ones too
    etag = recorder.exchanges[0].response_headers["etag"]
    assert sidecar(target) | {"last_modified": None} == {
        "format": 1,
        "url": url,
        "etag": etag,
        "last_modified": None,
        "size": SIZE,
        "digest": None,
    }

    result = download(url, target)
    assert target.read_bytes() == (root / "data.bin").read_bytes()
    assert (result.resumed_from, result.transferred, result.restarted, result.statuses) == (
        CUT,
        SIZE - CUT,
        False,
        (206,),
    )
    second = recorder.exchanges[1]
    assert (second.headers["range"], second.headers["if-range"]) == (f"bytes={CUT}-", etag)
    assert (second.status, second.body_bytes) == (206, SIZE - CUT)  # only the missing bytes travelled
    assert leftovers(target) == []


def test_the_sidecar_is_on_disk_before_the_first_byte(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    url = f"{serve_app(file_app(root))}/data.bin"
    target = tmp_path / "out.bin"
    seen: list[tuple[int, dict[str, Any]]] = []

    def progress(done: int, total: int | None) -> None:
        if not seen:  # the first call comes before any body byte is written
            seen.append((target.with_name("out.bin.part").stat().st_size, sidecar(target)))

    download(url, target, progress=progress)
    [(part_size, state)] = seen
    assert part_size == 0
    assert (state["url"], state["size"]) == (url, SIZE)
    assert state["etag"].startswith('"')


def test_an_exception_in_progress_stops_the_download_and_the_next_run_resumes(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    url = f"{serve_app(file_app(root))}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(Stop):
        download(url, target, progress=stop_after(1), chunk_size=256 * 1024)
    kept = target.with_name("out.bin.part").stat().st_size
    assert 256 * 1024 <= kept < SIZE
    result = download(url, target)
    assert (result.resumed_from, result.transferred) == (kept, SIZE - kept)
    assert target.read_bytes() == (root / "data.bin").read_bytes()


def test_a_file_changed_on_the_server_is_fetched_again_from_the_start(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    recorder = Recorder(file_app(root), cuts=[CUT])
    url = f"{serve_app(recorder)}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError):
        download(url, target)
    new = os.urandom(SIZE)
    (root / "data.bin").write_bytes(new)  # same size, same inode, new bytes
    # The ETag includes the modification time in nanoseconds; move it on for file systems with coarse clocks.
    stat = (root / "data.bin").stat()
    os.utime(root / "data.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    result = download(url, target)
    assert target.read_bytes() == new
    assert (result.restarted, result.resumed_from, result.transferred, result.statuses) == (True, 0, SIZE, (200,))
    assert result.restart_reason is not None
    assert "changed" in result.restart_reason
    # The client did ask to resume; the server's If-Range check refused the old version.
    assert recorder.exchanges[1].headers["range"] == f"bytes={CUT}-"


def _drop_etag(headers: dict[bytes, bytes]) -> None:
    del headers[b"etag"]


def _weak_etag(headers: dict[bytes, bytes]) -> None:
    headers[b"etag"] = b"W/" + headers[b"etag"]


def _weak_etag_only(headers: dict[bytes, bytes]) -> None:
    _weak_etag(headers)
    del headers[b"last-modified"]


@pytest.mark.parametrize(
    ("edit", "if_range"),
    [
        (_drop_etag, "date"),  # Last-Modified stands in for a missing ETag
        (_weak_etag, "date"),  # a weak ETag is never sent in If-Range (RFC 9110 §13.1.5)
        (_weak_etag_only, None),  # nothing strong to check the part against: no Range at all
    ],
)
def test_if_range_uses_only_strong_validators(
    root: Path, tmp_path: Path, serve_app: ServeApp, edit: Callable[[dict[bytes, bytes]], None], if_range: str | None
) -> None:
    # A Last-Modified date is strong only when the response is dated a second or more later.
    past = time.time() - 60
    os.utime(root / "data.bin", (past, past))
    recorder = Recorder(file_app(root), cuts=[CUT], edit=edit)
    url = f"{serve_app(recorder)}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError):
        download(url, target)
    result = download(url, target)
    assert target.read_bytes() == (root / "data.bin").read_bytes()
    second = recorder.exchanges[1].headers
    if if_range == "date":
        assert second["if-range"] == email.utils.formatdate(int(past), usegmt=True)
        assert (result.resumed_from, result.statuses, result.restarted) == (CUT, (206,), False)
    else:
        assert "range" not in second
        assert "if-range" not in second
        assert (result.resumed_from, result.statuses, result.restarted) == (0, (200,), True)


def _same_second(headers: dict[bytes, bytes]) -> None:
    del headers[b"etag"]
    headers[b"date"] = headers[b"last-modified"]


def test_a_last_modified_date_from_the_same_second_is_not_trusted(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    # A response dated the second its file was modified: another change within that second would keep the date,
    # so resuming on it could mix two versions.
    recorder = Recorder(file_app(root), cuts=[CUT], edit=_same_second)
    url = f"{serve_app(recorder)}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError):
        download(url, target)
    result = download(url, target)
    assert "range" not in recorder.exchanges[1].headers
    assert (result.restarted, result.statuses) == (True, (200,))
    assert target.read_bytes() == (root / "data.bin").read_bytes()


@pytest.mark.parametrize("streaming", [False, True])
def test_a_server_that_ignores_ranges_is_downloaded_again_whole(
    tmp_path: Path, serve_app: ServeApp, streaming: bool
) -> None:
    content = os.urandom(SIZE)

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if streaming:
            # Chunked, no Content-Length, no validators: nothing to resume against, so no Range is even sent.
            response = StreamingResponse(iter([content[i : i + 65536] for i in range(0, SIZE, 65536)]))
        else:
            # A strong ETag, but a plain Response ignores Range: the client asks to resume and gets 200.
            response = Response(content, headers={"etag": '"v1"'})
        await response(scope, receive, send)

    recorder = Recorder(inner, cuts=[CUT])
    url = f"{serve_app(recorder)}/x"
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError):
        download(url, target)
    assert target.with_name("out.bin.part").stat().st_size > 0
    result = download(url, target)
    assert target.read_bytes() == content
    assert (result.restarted, result.statuses, result.transferred) == (True, (200,), SIZE)
    assert ("range" in recorder.exchanges[1].headers) is not streaming


def test_a_complete_part_is_finished_by_a_416(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    # A run stopped after the last byte but before the rename: the next one asks for bytes past the end.
    recorder = Recorder(file_app(root))
    url = f"{serve_app(recorder)}/data.bin"
    target = tmp_path / "out.bin"
    with pytest.raises(Stop):
        download(url, target, progress=stop_after(SIZE))
    result = download(url, target)
    assert (result.statuses, result.transferred, result.resumed_from) == ((416,), 0, SIZE)
    assert target.read_bytes() == (root / "data.bin").read_bytes()
    assert leftovers(target) == []


def test_a_wrong_repr_digest_raises_integrity_error_and_keeps_nothing(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    wrong = sha256_field(b"something else")

    def edit(headers: dict[bytes, bytes]) -> None:
        headers[b"repr-digest"] = wrong.encode()

    target = tmp_path / "out.bin"
    with pytest.raises(IntegrityError) as caught:
        download(f"{serve_app(Recorder(file_app(root), edit=edit))}/data.bin", target)
    assert caught.value.expected == wrong
    assert caught.value.actual == sha256_field((root / "data.bin").read_bytes())
    assert not target.exists()
    assert leftovers(target) == []


def test_a_matching_repr_digest_is_verified_among_other_algorithms(
    root: Path, tmp_path: Path, serve_app: ServeApp
) -> None:
    right = sha256_field((root / "data.bin").read_bytes())

    def edit(headers: dict[bytes, bytes]) -> None:
        headers[b"repr-digest"] = b"unixsum=:AAAA:, " + right.encode() + b";p=1"

    result = download(f"{serve_app(Recorder(file_app(root), edit=edit))}/data.bin", tmp_path / "out.bin")
    assert (result.digest_verified, result.digest) == (True, right)


def test_the_servers_digest_is_kept_across_runs(
    root: Path, tmp_path: Path, serve_app: ServeApp, digests: DigestCache
) -> None:
    url = f"{serve_app(file_app(root, digests=digests))}/data.bin"
    # The server hashes a version in the background after its first request; wait until it announces it.
    deadline = time.monotonic() + 10
    while "repr-digest" not in (head := httpx.head(url)).headers:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert head.headers["repr-digest"] == sha256_field((root / "data.bin").read_bytes())
    target = tmp_path / "out.bin"
    with pytest.raises(Stop):
        download(url, target, progress=stop_after(SIZE))
    assert sidecar(target)["digest"] == head.headers["repr-digest"]
    # The 416 that finishes this run carries no Repr-Digest: the sidecar's is checked.
    result = download(url, target)
    assert (result.statuses, result.digest_verified, result.digest) == ((416,), True, head.headers["repr-digest"])


def test_an_error_status_raises_with_the_problem_detail(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError, match=r"404 Not Found: no file named 'missing\.bin'") as caught:
        download(f"{serve_app(file_app(root))}/missing.bin", target)
    assert (caught.value.status, caught.value.detail, caught.value.partial) == (
        404,
        "no file named 'missing.bin'",
        None,
    )
    assert leftovers(target) == []  # the empty .part and its sidecar are not left behind


def test_an_unreachable_server_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(DownloadError, match="cannot connect"):
        download(f"http://127.0.0.1:{free_port()}/x", target)
    assert leftovers(target) == []


def test_two_runs_never_write_the_same_part(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    url = f"{serve_app(file_app(root))}/data.bin"
    target = tmp_path / "out.bin"
    refused: list[DownloadError] = []

    def progress(done: int, total: int | None) -> None:
        if not refused:
            with pytest.raises(DownloadError, match="another download") as caught:
                download(url, target)
            refused.append(caught.value)

    download(url, target, progress=progress)
    assert len(refused) == 1
    assert target.read_bytes() == (root / "data.bin").read_bytes()


def test_a_part_of_another_url_is_not_resumed(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    recorder = Recorder(file_app(root))
    base = serve_app(recorder)
    (root / "other.bin").write_bytes(os.urandom(SIZE))
    target = tmp_path / "out.bin"
    with pytest.raises(Stop):
        download(f"{base}/other.bin", target, progress=stop_after(1))
    result = download(f"{base}/data.bin", target)
    assert (result.restarted, result.resumed_from, result.statuses) == (True, 0, (200,))
    assert "range" not in recorder.exchanges[1].headers  # not left to the server's If-Range check
    assert target.read_bytes() == (root / "data.bin").read_bytes()


def test_a_part_without_its_sidecar_is_not_trusted(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    target = tmp_path / "out.bin"
    target.with_name("out.bin.part").write_bytes(b"x" * 1000)
    result = download(f"{serve_app(file_app(root))}/data.bin", target)
    assert (result.restarted, result.resumed_from) == (True, 0)
    assert target.read_bytes() == (root / "data.bin").read_bytes()


# -- misbehaving servers, through httpx.MockTransport

BODY = bytes(range(256)) * 4
ETAG = '"v1"'


def whole(body: bytes = BODY, etag: str = ETAG) -> httpx.Response:
    return httpx.Response(200, headers={"etag": etag}, content=body)


def cut_whole(body: bytes = BODY, at: int = 100) -> httpx.Response:
    """A 200 whose connection breaks after ``at`` bytes."""

    def chunks() -> Iterator[bytes]:
        yield body[:at]
        raise httpx.RemoteProtocolError("peer closed connection")

    return httpx.Response(200, headers={"etag": ETAG, "content-length": str(len(body))}, content=chunks())


def ranged(start: int, stop: int, total: int = len(BODY), etag: str = ETAG, body: bytes = BODY) -> httpx.Response:
    headers = {"etag": etag, "content-range": f"bytes {start}-{stop - 1}/{total}"}
    return httpx.Response(206, headers=headers, content=body[start:stop])


def mock_client(answers: list[httpx.Response]) -> tuple[httpx.Client, list[httpx.Request]]:
    """A client whose server gives ``answers`` in turn; and the requests it got."""
    requests: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return pending.pop(0)

    return httpx.Client(transport=httpx.MockTransport(handle)), requests


def cut_run(tmp_path: Path) -> Path:
    """A first run whose connection breaks after 100 bytes: the .part and sidecar to resume from."""
    target = tmp_path / "out.bin"
    client, _requests = mock_client([cut_whole()])
    with client, pytest.raises(DownloadError):
        download("http://test/f", target, client=client)
    assert target.with_name("out.bin.part").stat().st_size == 100
    return target


def resume_with(tmp_path: Path, *answers: httpx.Response) -> tuple[DownloadResult, Path, list[httpx.Request]]:
    target = cut_run(tmp_path)
    client, requests = mock_client(list(answers))
    with client:
        result = download("http://test/f", target, client=client)
    return result, target, requests


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (ranged(50, len(BODY)), "bytes 50-"),  # not where the part ends
        (ranged(100, 2000, total=2000, body=bytes(2000)), "size changed"),
        (ranged(100, len(BODY), etag='"v2"'), "ETag changed"),
        (httpx.Response(206, headers={"etag": ETAG, "content-type": "multipart/byteranges; b=x"}), "unusable"),
        (httpx.Response(416, headers={"content-range": f"bytes */{len(BODY)}"}), "416"),
    ],
)
def test_a_206_or_416_that_does_not_fit_the_part_starts_over(tmp_path: Path, first: httpx.Response, why: str) -> None:
    result, target, requests = resume_with(tmp_path, first, whole())
    assert target.read_bytes() == BODY
    assert result.restarted
    assert why in str(result.restart_reason)
    assert requests[0].headers["range"] == "bytes=100-"
    assert "range" not in requests[1].headers


def test_a_shorter_range_than_asked_is_continued(tmp_path: Path) -> None:
    result, target, requests = resume_with(tmp_path, ranged(100, 600), ranged(600, len(BODY)))
    assert target.read_bytes() == BODY
    assert [r.headers["range"] for r in requests] == ["bytes=100-", "bytes=600-"]
    assert (result.resumed_from, result.transferred, result.restarted) == (100, len(BODY) - 100, False)


def test_a_short_body_without_a_transport_error_is_a_download_error(tmp_path: Path) -> None:
    # Content-Range promises 924 bytes, the (chunked) body ends cleanly after 10: no transport error to notice.
    headers = {"etag": ETAG, "content-range": "bytes 100-1023/1024"}
    short = httpx.Response(206, headers=headers, content=iter([b"0123456789"]))
    target = cut_run(tmp_path)
    client, _requests = mock_client([short])
    with client, pytest.raises(DownloadError, match="ended after 10 of 924 bytes") as caught:
        download("http://test/f", target, client=client)
    assert caught.value.partial == target.with_name("out.bin.part")
    assert caught.value.partial.stat().st_size == 110


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(503, json={"title": "Service Unavailable", "detail": "try later"}),
            "503 Service Unavailable: try later",
        ),
        (httpx.Response(500, text="disk on fire\nsecond line"), "500 Internal Server Error: disk on fire"),
        (httpx.Response(206, content=b"x"), "206 Partial Content"),  # a 206 to a request without Range
        (httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"x"), "Content-Encoding gzip"),
    ],
)
def test_unusable_answers_raise_download_error(tmp_path: Path, response: httpx.Response, message: str) -> None:
    client, _requests = mock_client([response])
    with client, pytest.raises(DownloadError, match=message):
        download("http://test/f", tmp_path / "out.bin", client=client)
    assert leftovers(tmp_path / "out.bin") == []


def test_headers_are_sent_and_redirects_followed(tmp_path: Path) -> None:
    redirect = httpx.Response(302, headers={"location": "http://test/real"})
    client, requests = mock_client([redirect, whole()])
    with client:
        download("http://test/f", tmp_path / "out.bin", client=client, headers={"authorization": "Bearer t"})
    assert [str(r.url) for r in requests] == ["http://test/f", "http://test/real"]
    assert requests[1].headers["authorization"] == "Bearer t"


# -- names and digests


@pytest.mark.parametrize(
    ("disposition", "url", "name"),
    [
        ('attachment; filename="report.csv"', "http://h/x", "report.csv"),
        ("attachment; filename=plain.txt", "http://h/x", "plain.txt"),
        (
            "attachment; filename=\"fallback.csv\"; filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.csv",
            "",
            "données été.csv",
        ),
        ("attachment; filename*=iso-8859-1'en'caf%E9.txt", "http://h/x", "café.txt"),
        ('attachment; filename="../../x"', "http://h/y", "x"),
        ("attachment; filename*=UTF-8''..%2F..%2Fescape", "http://h/y", "escape"),
        ('attachment; filename="..\\\\..\\\\win.txt"', "http://h/y", "win.txt"),
        ('attachment; filename="/etc/passwd"', "http://h/y", "passwd"),
        ('attachment; filename=".."', "http://h/from-url.bin", "from-url.bin"),
        ('attachment; filename=".bashrc"', "http://h/y", "bashrc"),
        ('attachment; filename="a\\"b.txt"', "http://h/y", "a_b.txt"),
        ('attachment; filename="evil\u202etxt.exe"', "http://h/y", "eviltxt.exe"),
        ('attachment; filename="CON.txt"', "http://h/y", "_CON.txt"),
        ("attachment; filename*=UTF-8''%FF%FE", "http://h/dir/caf%C3%A9.bin?x=1", "café.bin"),
        (None, "http://h/dir/", "dir"),
        (None, "http://h/", "download"),
        (None, "http://h/%2E%2E", "download"),
    ],
)
def test_filename_from_never_gives_a_path(disposition: str | None, url: str, name: str) -> None:
    assert filename_from(disposition, url) == name


def test_safe_filename_keeps_long_names_within_255_bytes_and_their_suffix() -> None:
    name = safe_filename("é" * 300 + ".tar.gz")
    assert name is not None
    assert len(name.encode()) <= 255
    assert name.endswith("é.gz")
    assert safe_filename(" . ") is None


def test_parse_repr_digest_reads_a_structured_dictionary() -> None:
    value = "sha-512=:" + base64.b64encode(b"\x01" * 64).decode() + ":, SHA-256=:AAEC:;p=1, bad=x, worse=:!!:"
    assert parse_repr_digest(value) == {"sha-512": b"\x01" * 64, "sha-256": b"\x00\x01\x02"}


def test_client_errors_are_chute_errors() -> None:
    assert issubclass(ClientError, ChuteError)
    assert issubclass(DownloadError, ClientError)
    assert issubclass(IntegrityError, ClientError)
    assert not issubclass(IntegrityError, DownloadError)  # a complete but wrong file is not worth resuming


def test_a_write_interrupted_after_the_system_call_leaves_no_byte_twice(
    root: Path, tmp_path: Path, serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C is delivered between bytecodes: possibly right after a write reached the disk and before the
    # count moved on. The bytes on disk must still be exactly a prefix of the file.
    module = importlib.import_module("chute.client.downloads")
    real = module._pwrite
    writes = 0

    def interrupted(fd: int, data: memoryview, offset: int) -> int:
        nonlocal writes
        written: int = real(fd, data, offset)
        writes += 1
        if writes == 2:
            raise Stop
        return written

    url = f"{serve_app(file_app(root))}/data.bin"
    target = tmp_path / "out.bin"
    monkeypatch.setattr(module, "_pwrite", interrupted)
    with pytest.raises(Stop):
        download(url, target)
    monkeypatch.setattr(module, "_pwrite", real)
    kept = target.with_name("out.bin.part").read_bytes()
    assert len(kept) > 1024 * 1024
    assert kept == (root / "data.bin").read_bytes()[: len(kept)]
    result = download(url, target)
    assert result.resumed_from == len(kept)
    assert target.read_bytes() == (root / "data.bin").read_bytes()


def test_an_empty_file(root: Path, tmp_path: Path, serve_app: ServeApp) -> None:
    (root / "empty.txt").write_bytes(b"")
    target = tmp_path / "empty.txt"
    result = download(f"{serve_app(file_app(root))}/empty.txt", target)
    assert (result.size, result.statuses, target.read_bytes()) == (0, (200,), b"")
    assert leftovers(target) == []
