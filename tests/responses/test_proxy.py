"""ProxyStream on a real server, against a real upstream that misbehaves: fails, stalls, resets, compresses, redirects.

The upstream is a raw asyncio HTTP/1.1 server in a thread of its own (so it can do what a framework would not:
stall between bytes, reset a connection, lie about nothing), and it notes when the proxy's connection goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp

from chute import ProxyStream, protocol, upstreams, zerocopy
from chute.compression import CompressionMiddleware
from chute.exceptions import ConfigurationError
from chute.service.app import create_app
from chute.service.settings import Settings
from chute.upstreams import Allowlist, Upstream, upstream_client
from tests.conftest import free_port

DATA = bytes(range(256)) * 4096  # 1 MiB
TEXT = b"".join(b"line %d of a compressible text\n" % i for i in range(40_000))
ETAG = '"v1"'
TEXT = b"id,name\r\n" + b"".join(b"%d,item %d\r\n" % (i, i) for i in range(20_000))
GZ = gzip.compress(TEXT)
PARTIAL = 100_000
"""Body bytes the stalling and resetting upstreams send before they misbehave."""
BIG = 64 << 20
READ_TIMEOUT = 0.5


# -- the upstream


class RawUpstream:
    """An HTTP/1.1 server on 127.0.0.1 in its own thread and event loop; each path behaves in its own way."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.closed_at: dict[str, float] = {}
        """When the proxy's connection of each path went away (time.monotonic)."""
        self.sent: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.scheme = "https" if ssl_context else "http"

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head.decode("latin-1").split("\r\n")
                target = line.split(" ")[1]
                headers = {}
                for header in lines:
                    if header:
                        name, _, value = header.partition(":")
                        headers[name.strip().lower()] = value.strip()
                path = urlsplit(target).path
                self.requests.append((path, headers))
                keep = await self._answer(path, parse_qs(urlsplit(target).query), headers, line, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(
        self,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        line: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; whether the connection may serve another."""
        head_only = line.startswith("HEAD ")

        async def respond(status: str, fields: list[tuple[str, str]], body: bytes = b"") -> bool:
            fields = [*fields, ("Content-Length", str(len(body)))]
            raw = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
            writer.write(raw.encode("latin-1") + (b"" if head_only else body))
            await writer.drain()
            return True

        if path == "/text":  # compressible, with a Content-Length: the splice path unless a middleware compresses
            return await respond("200 OK", [("Content-Type", "text/plain; charset=utf-8")], TEXT)
        if path == "/data":
            fields = [
                ("Content-Type", "application/octet-stream"),
                ("ETag", ETAG),
                ("Last-Modified", "Tue, 01 Oct 2024 10:00:00 GMT"),
                ("Cache-Control", "public, max-age=60"),
                ("Accept-Ranges", "bytes"),
                ("Set-Cookie", "session=upstream-secret"),
                ("Server", "upstream-secret-server"),
                ("X-Internal", "secret"),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
            ]
            if headers.get("if-none-match") == ETAG:
                return await respond("304 Not Modified", [f for f in fields if f[0] in ("ETag", "Cache-Control")])
            if "range" in headers:
                start_text, _, end_text = headers["range"].removeprefix("bytes=").partition("-")
                start, end = int(start_text), min(int(end_text or len(DATA) - 1), len(DATA) - 1)
                if start >= len(DATA):
                    return await respond("416 Range Not Satisfiable", [("Content-Range", f"bytes */{len(DATA)}")])
                fields.append(("Content-Range", f"bytes {start}-{end}/{len(DATA)}"))
                return await respond("206 Partial Content", fields, DATA[start : end + 1])
            return await respond("200 OK", fields, DATA)
        if path == "/named":
            fields = [("Connection", "keep-alive, Cache-Control, X-Hop"), ("Cache-Control", "no-store"), ("X-Hop", "1")]
            return await respond("200 OK", [*fields, ("ETag", ETAG)], b"named")
        if path == "/gzip":
            fields = [("Content-Type", "text/csv"), ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
            return await respond("200 OK", fields, GZ)
        if path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"one,", b"two,", b"three"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/echo":
            return await respond("200 OK", [("Content-Type", "application/json")], json.dumps(headers).encode())
        if path == "/fail":
            return await respond("500 Internal Server Error", [("Content-Type", "text/html")], b"<h1>stack trace</h1>")
        if path == "/teapot":
            return await respond("418 I'm a teapot", [("Content-Type", "text/plain")], b"short and stout")
        if path == "/missing":
            return await respond("404 Not Found", [("Content-Type", "text/plain")], b"no such thing")
        if path == "/redirect":
            return await respond("302 Found", [("Location", query["to"][0])])
        if path == "/redirect-loop":
            return await respond("302 Found", [("Location", "/redirect-loop")])
        if path == "/stall-headers":
            await self._until_closed(path, reader)
            return False
        if path in ("/stall-body", "/reset"):
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode() + DATA[:PARTIAL])
            await writer.drain()
            if path == "/reset":
                await asyncio.sleep(0.05)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return False
            await self._until_closed(path, reader)
            return False
        if path == "/close-early":  # a clean close (FIN) in the middle of a Content-Length body
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\n\r\n".encode() + DATA[:PARTIAL])
            await writer.drain()
            await asyncio.sleep(0.05)  # the proxy is past the headers, splicing, when the rest comes
            writer.write(DATA[PARTIAL : 4 * PARTIAL])
            await writer.drain()
            return False
        if path == "/endless-length":  # a Content-Length body that outlasts any test
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
            watcher = asyncio.ensure_future(self._until_closed(path, reader))
            with contextlib.suppress(ConnectionError):
                while not watcher.done():
                    writer.write(DATA)
                    await writer.drain()
            self.closed_at.setdefault(path, time.monotonic())
            watcher.cancel()
            return False
        if path == "/stall-chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % PARTIAL + DATA[:PARTIAL] + b"\r\n"
            )
            await writer.drain()
            await self._until_closed(path, reader)
            return False
        if path == "/forever":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            watcher = asyncio.ensure_future(self._until_closed(path, reader))
            with contextlib.suppress(ConnectionError):
                while not watcher.done():
                    writer.write(b"10000\r\n" + DATA[: 1 << 16] + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)
            self.closed_at.setdefault(path, time.monotonic())
            watcher.cancel()
            return False
        if path == "/big":
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode())
            self.sent[path] = 0
            for _ in range(BIG // len(DATA)):
                writer.write(DATA)
                await writer.drain()
                self.sent[path] += len(DATA)
            return True
        return await respond("404 Not Found", [], b"")

    async def _until_closed(self, path: str, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.closed_at.setdefault(path, time.monotonic())


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    server = RawUpstream()
    yield server
    server.close()


# -- the proxy


def serve(app: ASGIApp, port: int | None = None) -> tuple[str, Callable[[], None]]:
    """``app`` on uvicorn (chute's protocol, lifespan on) in a thread: its base URL, and how to stop it."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http=protocol.HttpToolsProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def proxy_app(allowlist: Allowlist, base: str, **client_options: Any) -> Starlette:
    """``GET /p/{path}`` relays ``{base}/{path}`` through one shared upstream client."""
    options = {"connect_timeout": 1.0, "read_timeout": READ_TIMEOUT} | client_options

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with upstream_client(allowlist, **options) as client:
            app.state.client = client
            yield

    async def relay(request: Request) -> ProxyStream:
        query = f"?{request.url.query}" if request.url.query else ""
        target = f"{base}/{request.path_params['path']}{query}"
        return ProxyStream(target, client=request.app.state.client, max_redirects=3)

    return Starlette(routes=[Route("/p/{path:path}", relay, methods=["GET", "HEAD"])], lifespan=lifespan)


Proxy = Callable[..., str]


@pytest.fixture
def make_proxy() -> Iterator[Proxy]:
    stops: list[Callable[[], None]] = []

    def make(upstream: str, *others: str, allow_private: bool = True, **client_options: Any) -> str:
        """A proxy of the upstream at ``upstream``; ``others`` are more allowlisted URLs (not allow_private)."""
        named = {"main": Upstream(upstream, allow_private=allow_private)}
        named |= {f"other{i}": Upstream(url) for i, url in enumerate(others)}
        base, stop = serve(proxy_app(Allowlist(named), upstream, **client_options))
        stops.append(stop)
        return base

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def proxy(make_proxy: Proxy, upstream: RawUpstream) -> str:
    return make_proxy(upstream.url())


def raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET over a raw socket: status, headers, and every byte after them until the server closed."""
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(1 << 20):
                raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split(" ")[1]), parsed, body


# -- passing through


def test_the_body_and_safe_headers_pass_through(proxy: str) -> None:
    response = httpx.get(f"{proxy}/p/data")
    assert response.status_code == 200
    assert response.content == DATA
    for name, value in {
        "content-type": "application/octet-stream",
        "content-length": str(len(DATA)),
        "etag": ETAG,
        "last-modified": "Tue, 01 Oct 2024 10:00:00 GMT",
        "cache-control": "public, max-age=60",
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
    }.items():
        assert response.headers[name] == value
    for name in ("set-cookie", "x-internal", "keep-alive"):
        assert name not in response.headers
    assert response.headers.get("server") != "upstream-secret-server"


def test_headers_named_in_connection_are_dropped(proxy: str) -> None:
    response = httpx.get(f"{proxy}/p/named")
    assert response.content == b"named"
    assert response.headers["etag"] == ETAG
    assert "cache-control" not in response.headers
    assert "x-hop" not in response.headers


def test_a_gzip_body_arrives_as_sent_still_compressed(proxy: str, upstream: RawUpstream) -> None:
    status, headers, body = raw_get(proxy, "/p/gzip", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert body == GZ  # byte for byte: never decompressed and compressed again
    assert headers["content-encoding"] == "gzip"
    assert headers["content-length"] == str(len(GZ))
    assert headers["vary"] == "Accept-Encoding"
    assert upstream.requests[-1][1]["accept-encoding"] == "gzip"
    assert httpx.get(f"{proxy}/p/gzip", headers={"accept-encoding": "gzip"}).content == TEXT


def test_a_chunked_upstream_body_is_relayed_chunked(proxy: str) -> None:
    response = httpx.get(f"{proxy}/p/chunked")
    assert response.content == b"one,two,three"
    assert response.headers["transfer-encoding"] == "chunked"


def test_only_safe_request_headers_reach_the_upstream(proxy: str, upstream: RawUpstream) -> None:
    sent = {
        "Cookie": "session=client-secret",
        "Authorization": "Bearer client-secret",
        "X-Forwarded-For": "10.0.0.1",
        "X-Custom": "1",
        "If-None-Match": '"other"',
        "Accept": "text/csv",
        "Range": "bytes=0-9",
    }
    seen = json.loads(raw_get(proxy, "/p/echo", sent)[2])  # a raw client: no Accept-Encoding of its own
    assert {k: seen[k] for k in ("if-none-match", "accept", "range")} == {
        "if-none-match": '"other"',
        "accept": "text/csv",
        "range": "bytes=0-9",
    }
    for name in ("cookie", "authorization", "x-forwarded-for", "x-custom"):
        assert name not in seen
    assert seen["accept-encoding"] == "identity"  # the client asked for no compression: neither does the proxy
    assert seen["host"] == f"127.0.0.1:{upstream.port}"
    assert seen["user-agent"].startswith("chute/")


def test_ranges_and_conditional_requests_are_the_upstreams_to_answer(proxy: str) -> None:
    ranged = httpx.get(f"{proxy}/p/data", headers={"range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    assert ranged.content == DATA[1000:2000]
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    unchanged = httpx.get(f"{proxy}/p/data", headers={"if-none-match": ETAG})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == ETAG
    beyond = httpx.get(f"{proxy}/p/data", headers={"range": f"bytes={len(DATA)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(DATA)}"


def test_head_relays_the_headers_only(proxy: str, upstream: RawUpstream) -> None:
    response = httpx.head(f"{proxy}/p/data")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(DATA))
    assert response.content == b""
    assert upstream.paths() == ["/data"]


def test_the_upstreams_404_passes_through(proxy: str) -> None:
    response = httpx.get(f"{proxy}/p/missing")
    assert response.status_code == 404
    assert response.text == "no such thing"


def test_a_stalled_client_holds_back_the_upstream(proxy: str, upstream: RawUpstream) -> None:
    """Backpressure: a client that reads nothing stops the upstream's sending after a few socket buffers."""
    host, port = "127.0.0.1", int(proxy.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect((host, port))
        sock.sendall(b"GET /p/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.5)
        held = upstream.sent["/big"]
        # Kernel buffers, not the proxy's memory: the upstream's send and the proxy's receive buffer (autotuned up
        # to tcp_rmem's 32 MiB here), the splice pipe (1 MiB), the proxy's send and the client's receive buffer.
        assert held < 28 << 20, f"the upstream sent {held >> 20} MiB to a client that read nothing"
        digest, received = hashlib.sha256(), 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        body = head.partition(b"\r\n\r\n")[2]
        while body:
            digest.update(body)
            received += len(body)
            body = sock.recv(1 << 20)
    assert received == BIG
    assert digest.digest() == hashlib.sha256(DATA * (BIG // len(DATA))).digest()


# -- failures before the headers: problem JSON


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


def test_an_upstream_5xx_is_a_502_without_its_body(proxy: str) -> None:
    problem = problem_of(httpx.get(f"{proxy}/p/fail"), 502)
    assert problem["upstream_status"] == 500
    assert "stack trace" not in json.dumps(problem)


def test_other_upstream_errors_are_502(proxy: str) -> None:
    assert problem_of(httpx.get(f"{proxy}/p/teapot"), 502)["upstream_status"] == 418


def test_an_upstream_that_stalls_before_its_headers_is_504(proxy: str, upstream: RawUpstream) -> None:
    started = time.monotonic()
    problem = problem_of(httpx.get(f"{proxy}/p/stall-headers"), 504)
    assert problem["detail"] == "the upstream did not answer in time"
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 2
    wait_for(lambda: "/stall-headers" in upstream.closed_at)


def test_a_refused_connection_is_502(make_proxy: Proxy, upstream: RawUpstream) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    problem = problem_of(httpx.get(f"{make_proxy(dead)}/p/data"), 502)
    assert problem["detail"] == "the upstream failed: ConnectError"


def test_a_connection_that_takes_too_long_is_504(
    proxy: str, upstream: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(host: str, port: int) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(upstreams, "resolve", slow)  # the connect timeout covers resolving the name too
    problem = problem_of(httpx.get(f"{proxy}/p/data"), 504)
    assert problem["detail"] == "the upstream did not accept a connection in time"


# -- failures after the headers: an aborted connection, never text in the body


@pytest.mark.parametrize("path", ["/stall-body", "/reset"])
def test_an_upstream_that_fails_mid_body_cuts_a_content_length_response_short(proxy: str, path: str) -> None:
    status, headers, body = raw_get(proxy, f"/p{path}")
    assert status == 200
    assert headers["content-length"] == str(len(DATA))
    assert body == DATA[:PARTIAL]  # what the upstream sent, then nothing: a short body, never an error message
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", f"{proxy}/p{path}") as response:
        response.read()


def test_an_upstream_that_stalls_mid_body_leaves_a_chunked_response_unterminated(
    proxy: str, upstream: RawUpstream
) -> None:
    status, headers, body = raw_get(proxy, "/p/stall-chunked")
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert DATA[:PARTIAL] in body or len(body) >= PARTIAL
    assert not body.endswith(b"0\r\n\r\n")  # no last chunk: the client knows the body is incomplete
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", f"{proxy}/p/stall-chunked") as response:
        response.read()
    wait_for(lambda: "/stall-chunked" in upstream.closed_at)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the client leaves


def test_a_client_that_leaves_mid_body_closes_the_upstream_at_once(proxy: str, upstream: RawUpstream) -> None:
    port = int(proxy.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /p/forever HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 1 << 20:
            received += len(sock.recv(1 << 16))
        left = time.monotonic()
    wait_for(lambda: "/forever" in upstream.closed_at, timeout=3)
    assert upstream.closed_at["/forever"] - left < 1.0


def test_a_client_that_leaves_before_the_headers_closes_the_upstream_at_once(
    make_proxy: Proxy, upstream: RawUpstream
) -> None:
    port = int(make_proxy(upstream.url(), read_timeout=30).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /p/stall-headers HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: "/stall-headers" in upstream.paths())
        left = time.monotonic()
    wait_for(lambda: "/stall-headers" in upstream.closed_at, timeout=3)
    assert upstream.closed_at["/stall-headers"] - left < 1.0


# -- redirects and the guard


def test_redirects_within_the_allowlist_are_followed(make_proxy: Proxy, upstream: RawUpstream) -> None:
    other = RawUpstream()
    try:
        proxy = make_proxy(upstream.url())
        assert httpx.get(f"{proxy}/p/redirect", params={"to": "/data"}).content == DATA
        # Another allowlisted origin (loopback, so allowed private too, as the main one).
        named = {"main": Upstream(upstream.url(), allow_private=True), "b": Upstream(other.url(), True)}
        base, stop = serve(proxy_app(Allowlist(named), upstream.url()))
        try:
            response = httpx.get(f"{base}/p/redirect", params={"to": other.url("/data")})
        finally:
            stop()
        assert response.content == DATA
        assert other.paths() == ["/data"]
    finally:
        other.close()


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{other}/data",  # another port: not allowlisted
        "http://127.1:{port}/data",  # the same server, spelt otherwise: not the allowlisted origin
        "http://2130706433:{port}/data",
        "http://0x7f000001:{port}/data",
        "http://0177.0.0.1:{port}/data",
        "http://[::ffff:7f00:1]:{port}/data",
        "http://localhost:{port}/data",  # allowlisted, without allow_private: its address is refused
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
    ],
)
def test_redirects_off_the_allowlist_or_to_local_addresses_are_refused(
    make_proxy: Proxy, upstream: RawUpstream, target: str
) -> None:
    other = RawUpstream()
    try:
        proxy = make_proxy(upstream.url(), f"http://localhost:{upstream.port}/")
        location = target.format(port=upstream.port, other=other.port)
        problem = problem_of(httpx.get(f"{proxy}/p/redirect", params={"to": location}), 502)
        assert problem["detail"] in (
            "the upstream is not one this server may reach",
            "the upstream failed: RemoteProtocolError",  # a Location httpx cannot parse (0177.0.0.1)
        )
        assert upstream.paths() == ["/redirect"]  # the redirect was not followed, not even to the same server
        assert other.paths() == []
    finally:
        other.close()


def test_a_redirect_loop_is_502(proxy: str, upstream: RawUpstream) -> None:
    problem = problem_of(httpx.get(f"{proxy}/p/redirect-loop"), 502)
    assert problem["detail"] == "the upstream redirected more than 3 times"
    assert len(upstream.paths()) == 4


def test_a_loopback_upstream_without_allow_private_is_never_contacted(make_proxy: Proxy, upstream: RawUpstream) -> None:
    problem = problem_of(httpx.get(f"{make_proxy(upstream.url(), allow_private=False)}/p/data"), 502)
    assert problem["detail"] == "the upstream is not one this server may reach"
    assert upstream.requests == []


def test_max_redirects_cannot_be_negative() -> None:
    with pytest.raises(ConfigurationError):
        ProxyStream("http://example.com/", client=httpx.AsyncClient(), max_redirects=-1)


# -- TLS: the connection goes to the vetted address, the certificate is checked against the name


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_an_https_upstream_gets_its_name_for_sni_and_the_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda connection, name, context: names.append(name)
    upstream = RawUpstream(context)
    try:
        url = upstream.url(host="localhost")
        allowlist = Allowlist({"tls": Upstream(url, allow_private=True)})
        trusted = ssl.create_default_context(cafile=str(cert))
        base, stop = serve(proxy_app(allowlist, url, verify=trusted))
        try:
            response = httpx.get(f"{base}/p/data")
            untrusted_base, stop_untrusted = serve(proxy_app(allowlist, url))
            try:
                untrusted = httpx.get(f"{untrusted_base}/p/data")
            finally:
                stop_untrusted()
        finally:
            stop()
    finally:
        upstream.close()
    assert response.content == DATA
    assert names[0] == "localhost"
    assert upstream.requests[0][1]["host"] == f"localhost:{upstream.port}"
    assert problem_of(untrusted, 502)["detail"] == "the upstream failed: ConnectError"  # self-signed: refused


# -- the reference service: GET /stream-external?source=<name>


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("service")
    settings = Settings(data=data, rows=100, port=port, batch_workers=1)
    base, stop = serve(create_app(settings), port)
    yield base
    stop()


def test_the_service_relays_its_named_upstreams(service: str) -> None:
    relayed = httpx.get(f"{service}/stream-external", params={"source": "self-csv"}, timeout=30)
    direct = httpx.get(f"{service}/stream-csv", params={"rows": 100_000}, timeout=30)
    assert relayed.status_code == 200
    assert relayed.content == direct.content
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    ranged = httpx.get(
        f"{service}/stream-external", params={"source": "self-file"}, headers={"range": "bytes=10-19"}, timeout=30
    )
    assert ranged.status_code == 206
    assert ranged.content == bytes(10)
    assert ranged.headers["content-range"] == f"bytes 10-19/{1 << 30}"


def test_the_service_answers_404_for_an_unknown_source(service: str) -> None:
    problem = problem_of(httpx.get(f"{service}/stream-external", params={"source": "http://example.com/"}), 404)
    assert problem["detail"] == "no upstream named 'http://example.com/'"
    assert httpx.get(f"{service}/stream-external").status_code == 422


def test_settings_take_upstreams_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUTE_UPSTREAMS", '{"example": {"url": "https://example.com/data.bin"}}')
    settings = Settings()
    assert settings.upstreams == {"example": Upstream("https://example.com/data.bin", allow_private=False)}
    assert json.loads(settings.environment()["CHUTE_UPSTREAMS"]) == {
        "example": {"url": "https://example.com/data.bin", "allow_private": False}
    }
    monkeypatch.setenv("CHUTE_UPSTREAMS", '{"bad": {"url": "ftp://example.com/"}}')
    with pytest.raises(ValueError, match="only http and https"):
        Settings()
    monkeypatch.delenv("CHUTE_UPSTREAMS")
    assert Settings(port=9001).upstream_allowlist()["self-csv"].url == "http://127.0.0.1:9001/stream-csv?rows=100000"
    assert os.environ.get("CHUTE_UPSTREAMS") is None


# -- the zero-copy body path (splice)


@pytest.fixture
def splices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts of the splices the proxy's server made (its protocol calls ``zerocopy.splice_all``)."""
    counts: list[int] = []
    real = zerocopy.splice_all

    async def spy(source: int, sink: int, count: int, **timeouts: Any) -> None:
        counts.append(count)
        await real(source, sink, count, **timeouts)

    monkeypatch.setattr(zerocopy, "splice_all", spy)
    return counts


def test_a_content_length_body_is_spliced_exactly(proxy: str, splices: list[int]) -> None:
    response = httpx.get(f"{proxy}/p/data")
    assert response.status_code == 200
    assert response.content == DATA
    assert len(splices) == 1
    assert 0 < splices[0] <= len(DATA)  # the rest was read with the headers and sent first
    assert httpx.get(f"{proxy}/p/data").content == DATA  # the spliced connection was closed; a new one serves it


def test_a_chunked_or_small_body_takes_the_ordinary_relay(proxy: str, splices: list[int]) -> None:
    assert httpx.get(f"{proxy}/p/chunked").content == b"one,two,three"
    assert httpx.get(f"{proxy}/p/named").content == b"named"
    assert httpx.get(f"{proxy}/p/data", headers={"range": "bytes=0-999"}).content == DATA[:1000]
    assert splices == []


def test_a_spliced_upstream_that_closes_early_aborts_the_response(proxy: str, splices: list[int]) -> None:
    status, headers, body = raw_get(proxy, "/p/close-early")
    assert status == 200
    assert headers["content-length"] == str(len(DATA))
    assert body == DATA[: 4 * PARTIAL]  # everything the upstream sent, then the connection is cut
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", f"{proxy}/p/close-early") as response:
        response.read()
    assert splices


def test_a_spliced_upstream_that_stalls_is_cut_after_the_read_timeout(
    proxy: str, upstream: RawUpstream, splices: list[int]
) -> None:
    started = time.monotonic()
    status, _, body = raw_get(proxy, "/p/stall-body")
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 2
    assert status == 200
    assert body == DATA[:PARTIAL]
    assert splices
    wait_for(lambda: "/stall-body" in upstream.closed_at)


def test_a_client_that_leaves_a_splice_closes_the_upstream_at_once(
    proxy: str, upstream: RawUpstream, splices: list[int]
) -> None:
    port = int(proxy.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /p/endless-length HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 4 << 20:
            received += len(sock.recv(1 << 16))
        left = time.monotonic()
    wait_for(lambda: "/endless-length" in upstream.closed_at, timeout=3)
    assert upstream.closed_at["/endless-length"] - left < 1.0
    assert splices


def test_a_compressed_answer_takes_the_ordinary_relay(upstream: RawUpstream, splices: list[int]) -> None:
    named = {"main": Upstream(upstream.url(), allow_private=True)}
    base, stop = serve(CompressionMiddleware(proxy_app(Allowlist(named), upstream.url())))
    try:
        plain = httpx.get(f"{base}/p/text", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == TEXT
        assert len(splices) == 1  # uncompressed, the body goes socket to socket
        compressed = httpx.get(f"{base}/p/text", headers={"accept-encoding": "gzip"})
        assert compressed.headers["content-encoding"] == "gzip"
        assert compressed.content == TEXT  # every byte went through the compressor, none past it
        assert len(splices) == 1
    finally:
        stop()
