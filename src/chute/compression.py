"""Streaming compression: ``zstd``, ``br`` and ``gzip`` chosen by ``Accept-Encoding``, as an ASGI middleware.

Theory of operation. :class:`CompressionMiddleware` wraps ``send``. At ``http.response.start`` it decides, once,
from the status, the headers and the :class:`CompressionPolicy`, whether this response is compressed; then every
body message is compressed and *flushed* (so each message the app sends reaches the client as a decodable unit:
chute's ``RecordStream`` sends ~64 KiB chunks and its 50 ms latency flushes, ``EventStream`` one message per
event), and only the app's last message (``more_body`` false) finishes the compressed stream. Nothing else ends
it: when the app raises after the headers, the exception passes through untouched and the server aborts the
connection, so a truncated body is never closed off as a complete compressed stream. Bulk messages of at least
``thread_threshold`` bytes are compressed in a worker thread (zlib, brotli and zstandard release the GIL) while
the app encodes the next one on the event loop: a one-deep pipeline (see :class:`_Responder`), so a second core
does the compression, at most one message is in flight, and memory stays bounded by that message and the
codec's window. Smaller messages and live events are compressed inline, where a thread hop would cost more than
the work. A file body the app hands to the server (the zero-copy or pathsend extensions) is read and
compressed here instead, block by block.

What is never compressed: a 206 (its ranges count bytes of the identity body), 204/304 and 1xx, a body that
already has a ``Content-Encoding``, a type that is not compressible (images, video, archives: anything outside
:data:`COMPRESSIBLE` and the policy's extra types), a body whose ``Content-Length`` is under ``minimum_size``,
and live streams (``text/event-stream``) unless the policy enables them. A compressed answer drops
``Content-Length`` and ``Accept-Ranges`` and weakens its ``ETag`` (``W/``: the bytes differ from the identity
representation's). Every answer of a type the policy would compress says ``Vary: Accept-Encoding``, also when
it went out uncompressed, so caches never serve one client's coding to another.

Default levels, chosen from ``./scripts/bench-compression`` (tables in benchmarks/README.md, "compression"),
so that compressing an export never becomes its bottleneck: on one core, each default compresses chute's
NDJSON export of the embedded orders at 260+ MB/s, where the export itself is produced at ~100 MB/s.

- gzip 1 (nginx's default too): 270 MB/s, ratio 0.15 on NDJSON, 0.25 on CSV. gzip 3 shrinks that by a fifth at
  ~60% of the speed, and over HTTP it cut the 1M-row export's throughput to 0.57x of identity (the target
  is 0.7x); gzip 1 measured 0.75-0.78x. Levels 6 and 9 run at 30-110 MB/s.
- br 1: twice gzip 1's speed at the same ratio. br 3 gives 25% smaller output at half the speed (a trade for
  slow links: ``levels={"br": 3}``); br 5 barely keeps up with the export, br 11 runs at 1 MB/s.
- zstd 3 (zstd's own default): as fast as br 1 with a better ratio (0.12 NDJSON, 0.20 CSV); zstd 1 is within
  the machine's noise of it. zstd 9 costs 6x the time for a third less; levels above 19 are refused (RFC 9659:
  HTTP's ``zstd`` coding must decode with an 8 MiB window).

Ties between acceptable codings go to the server's order, :data:`DEFAULT_CODECS` (zstd, br, gzip), fastest and
smallest first.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import anyio
import brotli  # type: ignore[import-untyped]
import zstandard
from anyio.abc import TaskGroup
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chute import feeds, zerocopy
from chute.exceptions import ConfigurationError
from chute.headers import weighted

Coding = Literal["zstd", "br", "gzip"]
Mode = Literal["bulk", "live"]

DEFAULT_CODECS: tuple[Coding, ...] = ("zstd", "br", "gzip")
DEFAULT_LEVELS: Mapping[str, int] = {"gzip": 1, "br": 1, "zstd": 3}
LEVEL_RANGES: Mapping[str, range] = {"gzip": range(1, 10), "br": range(12), "zstd": range(1, 20)}
DEFAULT_MINIMUM_SIZE = 1024
"""Bodies known to be smaller stay identity: the coding's framing would eat most of the gain."""
THREAD_THRESHOLD = 16 * 1024
"""Bulk messages of at least this many bytes are compressed in a worker thread (~0.1 ms of work at 150 MB/s)."""
FILE_BLOCK = 256 * 1024
"""Bytes read per hop when a file body (zero-copy or pathsend) has to be compressed instead."""

COMPRESSIBLE = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/jsonl",
        "application/x-jsonlines",
        "application/x-ndjson",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
    }
)
"""Media types compressed besides ``text/*`` and ``*+json`` / ``*+xml`` (problem JSON, GeoJSON, Atom...).

An allowlist, as nginx's ``gzip_types``: everything else (images, audio, video, zip, gzip, PDFs, octet-stream)
either is compressed already or is unknown, and compressing it again costs CPU for nothing."""

LIVE = frozenset({"text/event-stream"})
"""Media types that are live feeds: each message must reach the client when it is sent."""

NO_BODY_CHANGE = frozenset({204, 206, 304})
# Cannot be used from several threads at once, but never is: a response awaits each compression before the next.
_THREADS = anyio.CapacityLimiter(os.cpu_count() or 1)  # compression is CPU work: more threads than cores only queue


# -- the codecs: pure, synchronous, one per response


class Compressor(Protocol):
    """A streaming compressor: ``compress`` may buffer, ``flush`` makes everything so far decodable, ``finish``
    ends the stream (the compressor is then spent)."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def finish(self) -> bytes: ...


class GzipCompressor:
    """gzip (RFC 1952) with zlib; ``flush`` is a sync flush (the deflate stream stays open)."""

    def __init__(self, level: int) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self._zlib.compress(data)

    def flush(self) -> bytes:
        return self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._zlib.flush(zlib.Z_FINISH)


class BrotliCompressor:
    """Brotli (RFC 7932) with Google's ``brotli`` bindings."""

    def __init__(self, level: int) -> None:
        self._brotli = brotli.Compressor(quality=level)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._brotli.process(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._brotli.flush()
        return out

    def finish(self) -> bytes:
        out: bytes = self._brotli.finish()
        return out


class ZstdCompressor:
    """Zstandard (RFC 8878) with ``zstandard``; ``flush`` ends a block, not the frame."""

    def __init__(self, level: int) -> None:
        self._zstd = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._zstd.compress(data)

    def flush(self) -> bytes:
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


_COMPRESSORS: Mapping[str, type[GzipCompressor | BrotliCompressor | ZstdCompressor]] = {
    "gzip": GzipCompressor,
    "br": BrotliCompressor,
    "zstd": ZstdCompressor,
}


def compressor(coding: str, level: int) -> Compressor:
    """A fresh streaming compressor for ``coding`` at ``level`` (:class:`ConfigurationError` when unknown)."""
    check_level(coding, level)
    return _COMPRESSORS[coding](level)


def check_level(coding: str, level: int) -> None:
    if coding not in LEVEL_RANGES:
        raise ConfigurationError(f"unknown content coding {coding!r}; known: {', '.join(LEVEL_RANGES)}")
    levels = LEVEL_RANGES[coding]
    if isinstance(level, bool) or level not in levels:
        raise ConfigurationError(f"{coding} levels are {levels.start} to {levels.stop - 1}, not {level!r}")


# -- negotiation (RFC 9110 §12.5.3)


def parse_accept_encoding(header: str) -> dict[str, float]:
    """The q-value of each coding named in ``Accept-Encoding``, lower-cased (``x-gzip`` counts as ``gzip``).

    Malformed members (a bad or out-of-range q) are skipped; when a coding is named twice, the higher q wins."""
    qualities: dict[str, float] = {}
    for name, q in weighted(header):
        coding = name.lower()
        if not coding:
            continue
        coding = "gzip" if coding == "x-gzip" else coding
        qualities[coding] = max(q, qualities.get(coding, 0.0))
    return qualities


def negotiate_encoding(header: str | None, available: Sequence[str] = DEFAULT_CODECS) -> str | None:
    """The coding of ``available`` (server's preference first) to answer ``Accept-Encoding: header`` with, or
    ``None`` for identity.

    No header, or an empty one, means identity. A coding the header does not name takes the q of ``*``, if any;
    q=0 excludes. Identity wins over the best coding only when the header gives it (by name or by ``*``) a
    strictly higher q: a client that lists ``gzip;q=0.2`` alone asks for gzip, whatever RFC 9110's implicit q of
    identity would say. Ties go to ``available``'s order. When nothing is acceptable, identity is sent anyway
    (RFC 9110 §12.5.3 allows it; a body the client may refuse beats an error nobody can act on).
    """
    if not header or not header.strip():
        return None
    qualities = parse_accept_encoding(header)
    star = qualities.get("*")
    best, best_q = None, 0.0
    for coding in available:
        q = qualities.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    identity_q = qualities.get("identity", star if star is not None else 0.0)
    if best is None or identity_q > best_q:
        return None
    return best


# -- the policy


def media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def is_compressible(media: str) -> bool:
    """Whether ``media`` (a bare, lower-case media type) is text-like enough to compress."""
    return media.startswith("text/") or media.endswith(("+json", "+xml")) or media in COMPRESSIBLE


@dataclasses.dataclass(frozen=True)
class CompressionPolicy:
    """What is compressed, and how.

    ``codecs`` are the codings offered, the server's preference first; ``levels`` overrides
    :data:`DEFAULT_LEVELS` per coding. Types in ``live_types`` (default ``text/event-stream``) are left
    uncompressed unless ``compress_live``: then each event is compressed and flushed on its own. ``extra_types``
    are compressed besides :func:`is_compressible`'s; ``exclude_types`` never are.
    """

    codecs: tuple[str, ...] = DEFAULT_CODECS
    levels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    compress_live: bool = False
    live_types: frozenset[str] = LIVE
    extra_types: frozenset[str] = frozenset()
    exclude_types: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.codecs:
            raise ConfigurationError("a compression policy needs at least one coding")
        for coding in {*self.codecs, *self.levels}:
            check_level(coding, self.level(coding))

    def level(self, coding: str) -> int:
        return self.levels.get(coding, DEFAULT_LEVELS.get(coding, 0))

    def mode(self, content_type: str | None) -> Mode | None:
        """``"bulk"``, ``"live"``, or ``None`` when bodies of this type are never compressed."""
        media = media_type(content_type)
        if not media or media in self.exclude_types:
            return None
        if media in self.live_types:
            return "live" if self.compress_live else None
        return "bulk" if is_compressible(media) or media in self.extra_types else None


def weaken_etag(etag: str) -> str:
    """``W/"x"`` for ``"x"``: a compressed body is not byte-for-byte the representation a strong ETag names."""
    return etag if etag.startswith("W/") else f"W/{etag}"


def add_vary(headers: MutableHeaders, field: str = "Accept-Encoding") -> None:
    current = headers.get("vary")
    if current is None:
        headers["vary"] = field
        return
    names = {name.strip().lower() for name in current.split(",")}
    if "*" not in names and field.lower() not in names:
        headers["vary"] = f"{current}, {field}"


# -- the middleware


class CompressionMiddleware:
    """Compress the responses of ``app`` per ``policy`` (see the module's docstring).

    ``minimum_size``: bodies with a smaller ``Content-Length`` stay identity. ``thread_threshold``: body
    messages at least this large are compressed in a worker thread, while the app prepares the next one.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: CompressionPolicy | None = None,
        minimum_size: int = DEFAULT_MINIMUM_SIZE,
        thread_threshold: int = THREAD_THRESHOLD,
    ) -> None:
        self.app = app
        self.policy = policy or CompressionPolicy()
        self.minimum_size = minimum_size
        self.thread_threshold = thread_threshold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coding = negotiate_encoding(Headers(scope=scope).get("accept-encoding"), self.policy.codecs)
        head = scope.get("method") == "HEAD"
        if coding is None:  # nothing will be compressed: only Vary to add, no task group to keep per request
            await self.app(scope, receive, _Responder(self, send, None, None, head=head, scope=scope).send)
            return
        # The app gets its own extensions dict, so that a response this middleware compresses loses the ones that
        # would move its body past the middleware (the proxy's socket-to-socket splice; see _Responder.start).
        # The scope itself stays the same object: outer middlewares read what routing writes into it.
        scope["extensions"] = dict(scope.get("extensions") or {})
        failure: Exception | None = None
        async with anyio.create_task_group() as group:
            responder = _Responder(self, send, group, coding, head=head, scope=scope)
            try:
                await self.app(scope, receive, responder.send)
            except Exception as exc:  # raised below, bare: servers and callers must see the app's own error
                failure = exc
            # The app has sent its last message (or failed): what it sent before still goes out (the good
            # records before a cut), unless the client stalls; then the group ends with nothing left behind.
            with anyio.move_on_after(HAND_OVER):
                await responder.settle(quiet=True)
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure


HAND_OVER = 1.0
"""Seconds the last message the app sent may take to go out after the app ended (a stalled client is cut)."""


class _Job:
    """One body message compressed in a worker thread, then sent, while the app prepares the next one."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


class _Responder:
    """The ``send`` of one response: decides at the start, then compresses (or passes) each body message.

    Large bulk messages are pipelined one deep: ``send`` starts their compression (and the send of its output)
    in the task group and returns, so the app encodes the next chunk on the event loop while a second core
    compresses this one. Every ``send`` first waits for the previous job, so messages leave in order, at most
    one is in flight (memory stays bounded), a slow client still slows the app (backpressure, and the app's own
    send deadline covers the wait), and a failed send is raised to the app on its next one.
    """

    def __init__(
        self,
        middleware: CompressionMiddleware,
        send: Send,
        group: TaskGroup | None,
        coding: str | None,
        *,
        head: bool,
        scope: Scope,
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.policy = middleware.policy
        self._send = send
        self.group = group
        self.coding = coding
        self.head = head
        self.mode: Mode | None = None
        self.compressor: Compressor | None = None
        self._job: _Job | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._send(self.start(message))
        elif self.compressor is None:
            await self._send(message)
        elif kind == "http.response.body":
            await self.body(message.get("body", b""), more=message.get("more_body", False))
        elif kind == zerocopy.EXTENSION:
            file = message["file"]
            fd = file if isinstance(file, int) else file.fileno()
            await self.file(fd, message.get("offset"), message.get("count"), more=message.get("more_body", False))
        elif kind == "http.response.pathsend":
            fd = await anyio.to_thread.run_sync(os.open, message["path"], os.O_RDONLY)
            try:
                await self.file(fd, 0, None, more=False)
            finally:
                os.close(fd)
        elif kind == zerocopy.SPLICE_EXTENSION:
            raise RuntimeError(f"{kind} cannot carry a compressed body; the extension was withdrawn at the start")
        else:
            await self.settle()
            await self._send(message)

    def start(self, message: Message) -> Message:
        headers = MutableHeaders(raw=list(message["headers"]))
        status: int = message["status"]
        self.mode = self.policy.mode(headers.get("content-type"))
        if self.mode is None or "content-encoding" in headers:
            return message
        add_vary(headers)
        length = headers.get("content-length")
        small = length is not None and (not length.isdigit() or int(length) < self.middleware.minimum_size)
        if self.coding is not None and status >= 200 and status not in NO_BODY_CHANGE and not small:
            self.compressor = compressor(self.coding, self.policy.level(self.coding))
            # A body spliced socket to socket would bypass the compressor: the app must send it as messages.
            self.scope["extensions"].pop(zerocopy.SPLICE_EXTENSION, None)
            self.scope["extensions"].pop(feeds.EXTENSION, None)  # a detached feed is written past it too
            headers["content-encoding"] = self.coding
            del headers["content-length"]
            del headers["accept-ranges"]
            if "etag" in headers:
                headers["etag"] = weaken_etag(headers["etag"])
        return {**message, "headers": headers.raw}

    async def body(self, data: bytes, *, more: bool) -> None:
        if self.head:  # the headers say what GET would send; the (empty) body stays as it is
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
            return
        await self.settle()
        if more and not data:
            return  # nothing new to flush
        if self.mode == "bulk" and len(data) >= self.middleware.thread_threshold:
            if more:
                assert self.group is not None  # a compressor exists only with a coding, hence a group
                self._job = job = _Job()
                self.group.start_soon(self._compress_and_send, job, data)
                return
            out = await anyio.to_thread.run_sync(self.compress, data, more, limiter=_THREADS)
        else:
            out = self.compress(data, more)
        await self._send({"type": "http.response.body", "body": out, "more_body": more})

    async def _compress_and_send(self, job: _Job, data: bytes) -> None:
        try:
            out = await anyio.to_thread.run_sync(self.compress, data, True, limiter=_THREADS)
            await self._send({"type": "http.response.body", "body": out, "more_body": True})
        except Exception as exc:  # the app's next send raises it, as if its own send had failed
            job.error = exc
        finally:
            job.done.set()

    async def settle(self, *, quiet: bool = False) -> None:
        """Wait until the message in flight has been sent; raise its failure unless ``quiet``."""
        job, self._job = self._job, None
        if job is None:
            return
        await job.done.wait()
        if job.error is not None and not quiet:
            raise job.error

    def compress(self, data: bytes, more: bool) -> bytes:
        assert self.compressor is not None
        out = self.compressor.compress(data)
        return out + (self.compressor.flush() if more else self.compressor.finish())

    async def file(self, fd: int, offset: int | None, count: int | None, *, more: bool) -> None:
        """A file body the app meant the server to send itself: read and compressed here, block by block."""
        position = offset or 0
        left = count
        while left is None or left > 0:
            size = FILE_BLOCK if left is None else min(FILE_BLOCK, left)
            block = await anyio.to_thread.run_sync(os.pread, fd, size, position)
            if not block:
                if left is not None:  # as zerocopy does: the app aborts the response, never a short clean end
                    raise EOFError(f"the file ended {left} bytes early")
                break
            position += len(block)
            left = None if left is None else left - len(block)
            await self.body(block, more=True)
        await self.body(b"", more=more)
