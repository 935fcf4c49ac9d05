"""``FileStream``: a file under a root folder as an ASGI response, with ranges and conditional requests.

Theory of operation. The name is resolved and opened inside the root off the event loop
(:mod:`chute.paths`); ``fstat`` of the open descriptor gives the validators, so they describe the very file that
is sent. :func:`chute.ranges.evaluate` decides the status. The body then goes one of two ways:

- when the server offers the ``http.response.pathsend`` extension (granian does) and the whole file is asked
  for, the server sends it itself, with ``sendfile``;
- otherwise the descriptor is read with ``os.pread``: on the event loop when the range is in the page cache (a
  thread hop costs more than the read), in a worker thread when it is not. Chunks start at 64 KiB and, after
  8 MiB, double up to ``chunk_size``; the next chunk is read only once the server's buffer has drained, so a
  client that stalls after the headers pins one small chunk and a fast one gets large reads.

A file that changes while it is sent must not reach the client as if it were whole. A short read (the file
shrank) aborts the connection at once; before the last chunk goes out, ``fstat`` is compared with the one the
headers were built from, and any change (a rewrite, even of the same size, or growth) aborts it too. The client
then sees fewer bytes than ``Content-Length``: a truncated transfer, never a complete-looking wrong body.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import mimetypes
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chute import zerocopy
from chute.digests import DigestCache
from chute.exceptions import ConfigurationError, HTTPError, StreamAborted
from chute.headers import content_disposition
from chute.paths import open_inside
from chute.problems import problem, problem_response
from chute.ranges import ByteRange, Request, Validators, evaluate, http_date
from chute.responses.sending import Outcome, Sender, supervise

logger = logging.getLogger("chute")

FIRST_CHUNK = 64 * 1024
DEFAULT_CHUNK = 1024 * 1024
GROW_AFTER = 8 * 1024 * 1024
"""Bytes sent in small chunks before they grow: the kernel takes ~3 MB of a loopback client that reads nothing,
so a stalled client never earns a large chunk."""

_NOWAIT = getattr(os, "RWF_NOWAIT", None)
_PROBE = bytearray(1)


def _cached(fd: int, start: int, stop: int) -> bool:
    """Whether the first and last bytes of ``[start, stop)`` are in the page cache, read without waiting.

    Sequential readahead fills what lies between, so a read of the range will not wait on the disk; a miss (or a
    system without ``RWF_NOWAIT``) sends the read to a worker thread instead.
    """
    if _NOWAIT is None:
        return False
    try:
        return os.preadv(fd, [_PROBE], start, _NOWAIT) == 1 and os.preadv(fd, [_PROBE], stop - 1, _NOWAIT) == 1
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system without non-blocking reads
        return False


def etag_of(stat: os.stat_result) -> str:
    """A strong ETag for the file ``stat`` describes: it changes when the file is replaced or rewritten, also
    when a rewrite keeps the size (the modification time has nanoseconds)."""
    facts = f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return '"' + hashlib.blake2b(facts, digest_size=12).hexdigest() + '"'


def validators_of(stat: os.stat_result) -> Validators:
    return Validators(etag=etag_of(stat), last_modified=int(stat.st_mtime), size=stat.st_size)


class FileStream(Response):
    """Serve the file ``name`` from the folder ``root``.

    ``name`` comes from the client: anything that would leave ``root`` (``..``, absolute paths, symlinks out,
    Windows device names, NUL...) gets the same 404 as a missing file. ``filename`` is the download name
    (default: the file's own); ``disposition`` is ``attachment`` or ``inline``; ``cache_control`` is sent as is,
    so a CDN can cache; ``headers`` are added to every answer. Ranges (206, ``multipart/byteranges``),
    ``If-None-Match``/``If-Modified-Since`` (304), ``If-Match``/``If-Unmodified-Since`` (412), ``If-Range`` and
    416 follow RFC 9110; HEAD gives the headers of GET. With ``digests``, answers carry the file's SHA-256 as
    ``Repr-Digest`` once it has been computed (in the background, after the first request for that version).
    """

    def __init__(
        self,
        name: str,
        *,
        root: str | os.PathLike[str],
        filename: str | None = None,
        media_type: str | None = None,
        disposition: str = "attachment",
        cache_control: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        send_timeout: float | None = 60.0,
        headers: Mapping[str, str] | None = None,
        digests: DigestCache | None = None,
    ) -> None:
        if disposition not in ("attachment", "inline"):
            raise ConfigurationError(f"disposition must be attachment or inline, not {disposition!r}")
        if chunk_size < FIRST_CHUNK:
            raise ConfigurationError(f"chunk_size must be at least {FIRST_CHUNK}")
        self.name = name
        self.root = Path(root)
        self.filename = filename
        self.media_type = media_type
        self.disposition = disposition
        self.cache_control = cache_control
        self.chunk_size = chunk_size
        self.send_timeout = send_timeout
        self.digests = digests
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.outcome: Outcome = "pending"
        self.bytes_sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            fd, path = await anyio.to_thread.run_sync(open_inside, self.root, self.name)
        except HTTPError as exc:
            self.outcome = "refused"
            await problem_response(exc)(scope, receive, send)
            return
        try:
            await self._answer(scope, receive, send, fd, path)
        finally:
            os.close(fd)

    def _base_headers(self, path: Path, current: Validators) -> list[tuple[bytes, bytes]]:
        name = self.filename or path.name
        media_type = self.media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-type", b"content-length")]
        headers += [
            (b"content-type", media_type.encode("latin-1")),
            (b"accept-ranges", b"bytes"),
            (b"etag", current.etag.encode("latin-1")),
            (b"last-modified", http_date(current.last_modified).encode("latin-1")),
            (b"content-disposition", content_disposition(name, disposition=self.disposition).encode("latin-1")),
            (b"x-content-type-options", b"nosniff"),
        ]
        if self.cache_control is not None:
            headers.append((b"cache-control", self.cache_control.encode("latin-1")))
        digest = self.digests.lookup(path, current.etag) if self.digests is not None else None
        if digest is not None:
            headers.append((b"repr-digest", digest.encode("latin-1")))
        return headers

    async def _answer(self, scope: Scope, receive: Receive, send: Send, fd: int, path: Path) -> None:
        stat = os.fstat(fd)
        current = validators_of(stat)
        request_headers = Headers(scope=scope)
        method = scope.get("method", "GET")
        answer = evaluate(
            Request(
                method=method,
                range=request_headers.get("range"),
                if_range=request_headers.get("if-range"),
                if_match=request_headers.get("if-match"),
                if_none_match=request_headers.get("if-none-match"),
                if_modified_since=request_headers.get("if-modified-since"),
                if_unmodified_since=request_headers.get("if-unmodified-since"),
            ),
            current,
        )
        headers = self._base_headers(path, current)
        if answer.status == 304:
            # RFC 9110 §15.4.5: the validators and caching headers a 200 would carry, nothing about a body.
            keep = (b"etag", b"last-modified", b"cache-control", b"vary", b"expires", b"content-location")
            not_modified = [(k, v) for k, v in headers if k in keep]
            await _empty(send, 304, not_modified)
            self.outcome = "complete"
            return
        if answer.status in (412, 416):
            self.outcome = "refused"
            if answer.status == 412:
                response = problem(412, "Precondition Failed", "the file does not match the request's conditions")
            else:
                response = problem(416, "Range Not Satisfiable", f"no requested range starts before {current.size}")
                response.headers["content-range"] = f"bytes */{current.size}"
            response.headers["etag"] = current.etag
            await response(scope, receive, send)
            return

        media_type = dict(headers)[b"content-type"]
        parts: list[tuple[bytes, ByteRange]]
        trailer = b""
        if answer.status == 206 and len(answer.ranges) == 1:
            only = answer.ranges[0]
            parts = [(b"", only)]
            headers.append((b"content-range", only.content_range(current.size).encode("latin-1")))
        elif answer.status == 206:
            boundary = secrets.token_hex(16)
            parts, trailer = _multipart(answer.ranges, current.size, media_type, boundary)
            headers = [(k, v) for k, v in headers if k != b"content-type"]
            headers.append((b"content-type", f"multipart/byteranges; boundary={boundary}".encode("latin-1")))
        else:
            parts = [(b"", ByteRange(0, current.size))]
        length = sum(len(prefix) + part.length for prefix, part in parts) + len(trailer)
        headers.append((b"content-length", str(length).encode("latin-1")))
        start: Message = {"type": "http.response.start", "status": answer.status, "headers": headers}

        if method == "HEAD":
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
            return
        if answer.status == 200 and "http.response.pathsend" in scope.get("extensions", {}):
            await send(start)
            await send({"type": "http.response.pathsend", "path": str(path)})
            self.bytes_sent = current.size
            self.outcome = "complete"
            return
        sender = Sender(send, start, self.send_timeout)
        single = parts[0][1] if len(parts) == 1 else None
        if zerocopy.EXTENSION in scope.get("extensions", {}) and single is not None and single.length > FIRST_CHUNK:
            pump = functools.partial(self._pump_zerocopy, sender, send, fd, stat, single)
        else:
            pump = functools.partial(self._pump, sender, fd, stat, parts, trailer)
        await supervise(self, receive, pump, position=lambda: self.bytes_sent, unit="bytes")

    async def _pump(
        self, sender: Sender, fd: int, stat: os.stat_result, parts: Sequence[tuple[bytes, ByteRange]], trailer: bytes
    ) -> None:
        chunk = FIRST_CHUNK
        pending = b""
        for prefix, part in parts:
            pending += prefix
            offset = part.start
            while offset < part.stop:
                # Send what is pending before reading more, so the body's last bytes are still held when the
                # reading ends: they go out only after the file is checked once more.
                if len(pending) >= chunk:
                    await sender.body(pending, more=True)
                    self.bytes_sent += len(pending)
                    pending = b""
                    # An empty send returns once the server's write buffer has drained (uvicorn waits at the start
                    # of every send), so the next chunk is read only when the client has taken this one: a
                    # stalled client pins one chunk, not two. It is also the checkpoint that lets other
                    # connections run when reads come from the page cache and sends never block.
                    await sender.body(b"", more=True)
                    await anyio.lowlevel.checkpoint()
                    if self.bytes_sent >= GROW_AFTER:
                        chunk = min(chunk * 2, self.chunk_size)
                size = min(chunk, part.stop - offset)
                if _cached(fd, offset, offset + size):
                    data = os.pread(fd, size, offset)  # from the page cache: no thread hop (~70 us vs ~240 us)
                else:
                    data = await anyio.to_thread.run_sync(os.pread, fd, size, offset)
                if len(data) < size:
                    raise self._changed(f"it shrank to {offset + len(data)} bytes")
                offset += size
                pending = pending + data if pending else data
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            raise self._changed("it changed while it was sent")
        await sender.body(pending + trailer, more=False)
        self.bytes_sent += len(pending) + len(trailer)
        self.outcome = "complete"

    async def _pump_zerocopy(self, sender: Sender, send: Send, fd: int, stat: os.stat_result, part: ByteRange) -> None:
        """All but the last byte with the server's sendfile; the last after the file is checked once more, so a
        file rewritten during the transfer still never reaches the client as a complete body."""
        await sender.start()
        message = {
            "type": zerocopy.EXTENSION,
            "file": _Descriptor(fd),
            "offset": part.start,
            "count": part.length - 1,
            "more_body": True,
            "timeout": self.send_timeout if self.send_timeout is not None else zerocopy.DEFAULT_TIMEOUT,
        }
        try:
            await send(message)
        except EOFError:
            raise self._changed("it shrank while it was sent") from None
        self.bytes_sent += part.length - 1
        now = os.fstat(fd)
        last = os.pread(fd, 1, part.stop - 1)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (stat.st_size, stat.st_mtime_ns, stat.st_ino) or not last:
            raise self._changed("it changed while it was sent")
        await sender.body(last, more=False)
        self.bytes_sent += 1
        self.outcome = "complete"

    def _changed(self, what: str) -> StreamAborted:
        logger.error("file %s: %s; the connection is aborted after %d bytes", self.name, what, self.bytes_sent)
        return StreamAborted(f"file {self.name}: {what}", index=self.bytes_sent)


def _multipart(
    ranges: Sequence[ByteRange], size: int, media_type: bytes, boundary: str
) -> tuple[list[tuple[bytes, ByteRange]], bytes]:
    """Each range with the part header that precedes it (RFC 9110 §14.6), and the closing delimiter."""
    parts = []
    for i, part in enumerate(ranges):
        head = (
            ("" if i == 0 else "\r\n")
            + f"--{boundary}\r\nContent-Type: {media_type.decode('latin-1')}\r\n"
            + f"Content-Range: {part.content_range(size)}\r\n\r\n"
        )
        parts.append((head.encode("latin-1"), part))
    return parts, f"\r\n--{boundary}--\r\n".encode("latin-1")


class _Descriptor:
    """The ``file`` of a zero-copy send: the server only needs ``fileno()``; the descriptor stays ours to close."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


async def _empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
