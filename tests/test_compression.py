"""Compression: negotiation, the codecs, what is and is not compressed, live feeds, and failures after headers."""

from __future__ import annotations

import threading
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import brotli  # type: ignore[import-untyped]
import httpx
import msgspec
import pytest
import zstandard
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from chute import EventStream, FileStream, RecordStream
from chute.compression import (
    CompressionMiddleware,
    CompressionPolicy,
    compressor,
    negotiate_encoding,
)
from chute.encoders.sse import Event
from chute.exceptions import ConfigurationError, StreamAborted
from chute.protocol import HttpToolsProtocol
from tests.conftest import ServeApp

pytestmark = pytest.mark.anyio

ROWS = 20_000


# -- negotiation


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("GZIP", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),  # a tie: the server's order decides
        ("gzip, br", "br"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("zstd;q=0, br;q=0.1, gzip;q=0.2", "gzip"),
        ("gzip;q=0", None),
        ("*", "zstd"),
        ("*;q=0.5, zstd;q=0", "br"),
        ("*;q=0", None),
        ("deflate", None),  # only codings chute does not offer
        ("identity", None),
        ("gzip;q=0.5, identity", None),  # identity is preferred
        ("gzip;q=0.5", "gzip"),  # identity's implicit q does not beat a coding the client asked for
        ("gzip;q=0.5, *;q=0.6", "zstd"),
        ("gzip;q=0.5, *;q=0.6, zstd;q=0, br;q=0", None),  # "*" covers identity too
        ("gzip;q=0.5, identity;q=0.5", "gzip"),  # a tie with identity goes to compression
        ("identity;q=0, gzip;q=0.1", "gzip"),
        ("gzip;q=abc, br", "br"),  # a malformed member is skipped
        ("gzip;q=2", None),  # an out-of-range q too
        ("br;q=0.3, br;q=0.9, gzip;q=0.5", "br"),
        (" , ,gzip ; q=0.8 ", "gzip"),
    ],
)
def test_negotiation(header: str | None, expected: str | None) -> None:
    assert negotiate_encoding(header) == expected


def test_negotiation_among_the_offered_codings_only() -> None:
    assert negotiate_encoding("zstd, br", ("gzip",)) is None
    assert negotiate_encoding("zstd, gzip", ("gzip", "zstd")) == "gzip"


def test_bad_policies_are_refused_where_they_are_built() -> None:
    with pytest.raises(ConfigurationError):
        CompressionPolicy(codecs=("deflate",))
    with pytest.raises(ConfigurationError):
        CompressionPolicy(levels={"zstd": 22})  # above RFC 9659's 8 MiB window
    with pytest.raises(ConfigurationError):
        CompressionPolicy(codecs=())


# -- the codecs


DECOMPRESSORS: dict[str, Callable[[], Callable[[bytes], bytes]]] = {
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress,
    "br": lambda: brotli.Decompressor().process,
    "zstd": lambda: zstandard.ZstdDecompressor().decompressobj().decompress,
}


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("level", ["low", "high"])
def test_each_flush_makes_everything_so_far_decodable(coding: str, level: str) -> None:
    levels = {"gzip": (1, 9), "br": (0, 11), "zstd": (1, 19)}[coding]
    packer = compressor(coding, levels[0] if level == "low" else levels[1])
    decode = DECOMPRESSORS[coding]()
    chunks = [f"chunk {i}: ".encode() + bytes(range(256)) * (i * 10) for i in range(8)]
    received = b""
    for chunk in chunks:
        received += decode(packer.compress(chunk) + packer.flush())
        assert received.endswith(chunk)  # nothing of this chunk is held back
    assert received + decode(packer.finish()) == b"".join(chunks)


# -- the middleware, in process


async def rows(n: int) -> AsyncIterator[dict[str, int | str]]:
    for i in range(n):
        yield {"id": i, "name": f"Record {i}"}


def make_app(files: Path | None = None, policy: CompressionPolicy | None = None) -> CompressionMiddleware:
    async def export(request: Request) -> Response:
        return RecordStream(rows(ROWS), format="ndjson")

    async def image(request: Request) -> Response:
        return Response(b"\x89PNG" + bytes(8192), media_type="image/png")

    async def encoded(request: Request) -> Response:
        body = zlib.compress(b"x" * 8192, wbits=31)
        return Response(body, media_type="text/plain", headers={"content-encoding": "gzip"})

    async def small(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def file(request: Request) -> Response:
        assert files is not None
        return FileStream(request.path_params["name"], root=files)

    routes = [
        Route("/export", export),
        Route("/image", image),
        Route("/encoded", encoded),
        Route("/small", small),
        Route("/files/{name}", file, methods=["GET", "HEAD"]),
    ]
    return CompressionMiddleware(Starlette(routes=routes), policy=policy)


def export_lines(body: bytes) -> list[object]:
    return [msgspec.json.decode(line) for line in body.splitlines()]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_httpx_decodes_each_coding(coding: str) -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/export", headers={"accept-encoding": coding})
        identity = await client.get("/export", headers={"accept-encoding": "identity"})
    assert response.headers["content-encoding"] == coding
    assert "content-length" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.content == identity.content
    assert export_lines(response.content)[-1] == {"id": ROWS - 1, "name": f"Record {ROWS - 1}"}
    assert response.num_bytes_downloaded * 4 < len(response.content)  # it was really compressed
    assert "content-encoding" not in identity.headers
    assert identity.headers["vary"] == "Accept-Encoding"  # uncompressed, but it could have been


async def test_types_and_bodies_that_stay_as_they_are() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        image = await client.get("/image", headers={"accept-encoding": "gzip"})
        encoded = await client.get("/encoded", headers={"accept-encoding": "br, gzip"})
        small = await client.get("/small", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in image.headers
    assert "vary" not in image.headers
    assert image.content.startswith(b"\x89PNG")
    assert encoded.headers["content-encoding"] == "gzip"  # the app's own, decoded once by httpx
    assert encoded.content == b"x" * 8192
    assert "content-encoding" not in small.headers
    assert small.headers["vary"] == "Accept-Encoding"
    assert small.json() == {"ok": True}


@pytest.fixture
def text_files(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_bytes(b"".join(b"%d,item %d\r\n" % (i, i) for i in range(50_000)))
    return tmp_path


async def test_a_compressed_file_weakens_its_etag_and_drops_accept_ranges(text_files: Path) -> None:
    transport = httpx.ASGITransport(app=make_app(text_files))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        plain = await client.get("/files/data.csv", headers={"accept-encoding": "identity"})
        packed = await client.get("/files/data.csv", headers={"accept-encoding": "gzip"})
        head = await client.head("/files/data.csv", headers={"accept-encoding": "gzip"})
        ranged = await client.get("/files/data.csv", headers={"accept-encoding": "gzip", "range": "bytes=0-99"})
    etag = plain.headers["etag"]
    assert not etag.startswith("W/")
    assert plain.headers["accept-ranges"] == "bytes"
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["etag"] == f"W/{etag}"
    assert "accept-ranges" not in packed.headers
    assert packed.content == (text_files / "data.csv").read_bytes()
    assert head.headers["content-encoding"] == "gzip"
    assert "content-length" not in head.headers
    assert head.content == b""
    assert ranged.status_code == 206
    assert "content-encoding" not in ranged.headers
    assert ranged.headers["vary"] == "Accept-Encoding"
    assert ranged.content == (text_files / "data.csv").read_bytes()[:100]


async def test_an_error_after_the_headers_propagates_without_ending_the_stream() -> None:
    async def failing() -> AsyncIterator[dict[str, int]]:
        for i in range(100_000):  # many chunks, compressed in a worker thread while the next is encoded
            yield {"id": i}
        raise RuntimeError("the database went away")

    app = CompressionMiddleware(RecordStream(failing(), format="ndjson", max_latency=10))
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"accept-encoding", b"gzip")]}
    with pytest.raises(StreamAborted):
        await app(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start"
    assert all(m["more_body"] for m in bodies)  # never a clean end
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    received = decoder.decompress(b"".join(m["body"] for m in bodies))
    assert not decoder.eof  # the gzip stream was not finished: a client sees the truncation
    assert export_lines(received)[-1] == {"id": 99_999}  # the good records went out before the cut


# -- over a real server


def test_a_zero_copy_file_is_compressed_by_reading_it(serve_app: ServeApp, text_files: Path) -> None:
    base_url = serve_app(make_app(text_files), HttpToolsProtocol)
    response = httpx.get(f"{base_url}/files/data.csv", headers={"accept-encoding": "zstd"})
    assert response.headers["content-encoding"] == "zstd"
    assert response.content == (text_files / "data.csv").read_bytes()


def test_a_client_that_leaves_stops_the_export(serve_app: ServeApp) -> None:
    released = threading.Event()

    async def endless() -> AsyncIterator[dict[str, int]]:
        try:
            i = 0
            while True:
                yield {"id": i}
                i += 1
        finally:
            released.set()

    async def export(request: Request) -> Response:
        return RecordStream(endless(), format="ndjson")

    base_url = serve_app(CompressionMiddleware(Starlette(routes=[Route("/", export)])))
    with httpx.stream("GET", base_url, headers={"accept-encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        next(response.iter_bytes())
    assert released.wait(2.0)


def test_a_message_compressed_in_a_thread_goes_out_without_waiting_for_the_next(serve_app: ServeApp) -> None:
    body = b"".join(b"line %d\n" % i for i in range(50_000))  # well over the thread threshold

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        while (await receive())["type"] != "http.disconnect":  # a slow source: nothing more until the client leaves
            pass

    base_url = serve_app(CompressionMiddleware(app))
    decode = DECOMPRESSORS["gzip"]()
    received = b""
    with httpx.stream("GET", base_url, headers={"accept-encoding": "gzip"}, timeout=5) as response:
        for raw in response.iter_raw():
            received += decode(raw)
            if len(received) >= len(body):
                break
    assert received == body


def feed_app(policy: CompressionPolicy | None, feed: Callable[[], AsyncIterator[Event]]) -> CompressionMiddleware:
    async def events(request: Request) -> Response:
        return EventStream(feed(), retry=None)

    return CompressionMiddleware(Starlette(routes=[Route("/feed", events)]), policy=policy)


def test_live_feeds_stay_uncompressed_by_default(serve_app: ServeApp) -> None:
    async def feed() -> AsyncIterator[Event]:
        yield Event(data="one")
        await anyio.sleep_forever()

    base_url = serve_app(feed_app(None, feed))
    with httpx.stream("GET", f"{base_url}/feed", headers={"accept-encoding": "gzip, br, zstd"}) as response:
        assert "content-encoding" not in response.headers
        assert "vary" not in response.headers
        assert next(response.iter_raw()) == b"data: one\n\n"


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_live_feeds_when_enabled_flush_every_event(serve_app: ServeApp, coding: str) -> None:
    decoded = threading.Event()

    async def feed() -> AsyncIterator[Event]:
        yield Event(data="one")
        # The next event waits until the client decoded the first: a compressor holding it back never gets it.
        while not decoded.is_set():  # noqa: ASYNC110 (set by the client's thread, not on this event loop)
            await anyio.sleep(0.005)
        yield Event(data="two")
        await anyio.sleep_forever()

    base_url = serve_app(feed_app(CompressionPolicy(compress_live=True), feed))
    decode = DECOMPRESSORS[coding]()
    text = b""
    with httpx.stream("GET", f"{base_url}/feed", headers={"accept-encoding": coding}, timeout=5) as response:
        assert response.headers["content-encoding"] == coding
        for raw in response.iter_raw():
            text += decode(raw)
            if text == b"data: one\n\n":
                decoded.set()
            if text == b"data: one\n\ndata: two\n\n":
                break
    assert text == b"data: one\n\ndata: two\n\n"


async def test_non_http_scopes_pass_through() -> None:
    called: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope["type"])

    async def receive() -> Message:
        raise AssertionError

    async def send(message: Message) -> None:
        raise AssertionError

    await CompressionMiddleware(app)({"type": "lifespan"}, receive, send)
    assert called == ["lifespan"]
