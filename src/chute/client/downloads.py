"""Resumable downloads: :func:`download` fetches a URL into a file and survives any interruption.

Where the state lives. While a download runs, the bytes received so far are in ``<path>.part`` and what they
belong to in ``<path>.part.json`` (the sidecar: the URL, the strong ``ETag`` and/or a strong ``Last-Modified``,
the total size, the ``Repr-Digest`` once seen). The invariant is that every byte of the ``.part`` is the byte at
that offset of the version the sidecar names. It holds through any interruption (an exception, a cut
connection, Ctrl-C, ``kill -9``) because the ``.part`` only ever grows by appending what the server sent at its
end, the sidecar is replaced atomically (temporary file, ``os.replace``) before the first byte of a version is
written, and starting over truncates the ``.part`` to nothing *before* the sidecar changes. Each write goes to
its explicit offset, so a write cut short by Ctrl-C is never repeated elsewhere. The ``.part`` is locked
(``flock``, POSIX) while a download runs, so two runs never append to it at once. Data is not fsynced: the
death of the process loses nothing written, a power cut may (the digest, when the server sends one, tells).

A run continues from the length of the ``.part``: ``Range: bytes=<n>-`` with ``If-Range: <validator>`` (the
strong ETag, else the Last-Modified date when it is strong; never a weak ETag: RFC 9110 forbids it), so a server
whose file changed answers 200 with the whole new file instead of mixing versions. What each answer means:

- 206 with ``Content-Range: bytes <n>-<m>/<total>``, the same total and validators: appended. A shorter range
  than asked is fine: the next request continues after it.
- 206 that does not fit (another start, total or ETag, several ranges): the ``.part`` is dropped and the file
  asked for again without ``Range``.
- 200: the file changed (``If-Range`` failed) or the server ignores ranges: start over from 0, and say so
  (:attr:`DownloadResult.restarted`).
- 416: the ``.part`` already holds the whole file when its length is the sidecar's total (a run stopped between
  the last byte and the rename); otherwise start over.
- anything else: :class:`~chute.exceptions.DownloadError` with the status and the problem JSON ``detail``.

The end. Each response must deliver exactly the bytes its ``Content-Length``/``Content-Range`` promise, and the
``.part`` must reach the total; otherwise the connection was cut: ``DownloadError``, and the ``.part`` stays
for the next run. When the server sent ``Repr-Digest`` (RFC 9530) with ``sha-256`` or ``sha-512``, the finished
file is hashed and compared; on a mismatch the ``.part`` and its sidecar are deleted (their bytes are wrong at
an unknown place, so nothing in them is worth resuming from) and :class:`~chute.exceptions.IntegrityError` is
raised. Finally the ``.part`` is renamed to ``path`` (atomically, replacing any file there) and the sidecar
removed. A ``.part`` that is still empty when a run fails is removed with its sidecar: it would only litter.

Responses are asked for with ``Accept-Encoding: identity`` and stored as received: ranges count bytes of the
representation as sent, so a content-coded answer is refused rather than stored or decoded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import os
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from chute.exceptions import DownloadError, IntegrityError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the rest works
    fcntl = None  # type: ignore[assignment]

Progress = Callable[[int, int | None], None]
"""Called with (bytes on disk, total or ``None``): once when the body starts, then after every write."""

CHUNK_SIZE = 1024 * 1024
"""Bytes gathered from the socket before one write: large writes, and at most this much lost to a ``kill -9``."""
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
SIDECAR_FORMAT = 1
_DIGESTS = {"sha-256": "sha256", "sha-512": "sha512"}
"""``Repr-Digest`` algorithms (RFC 9530 names) checked, in order of preference, with their hashlib names."""
_ERROR_BODY_LIMIT = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did.

    ``resumed_from`` is the offset the run continued from (0 when it did not resume); ``transferred`` the body
    bytes received in this run; ``restarted`` says that bytes of an earlier run were thrown away (why:
    ``restart_reason``); ``digest`` is the ``Repr-Digest`` the file was checked against (``digest_verified``);
    ``statuses`` the status of every response, in order.
    """

    path: Path
    size: int
    resumed_from: int
    transferred: int
    restarted: bool
    restart_reason: str | None
    digest_verified: bool
    digest: str | None
    statuses: tuple[int, ...]


@dataclasses.dataclass
class _State:
    """The sidecar: what the bytes of the ``.part`` belong to."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    digest: str | None = None

    @property
    def validator(self) -> str | None:
        """What ``If-Range`` may carry: the strong ETag, else the (strong) Last-Modified date."""
        return self.etag or self.last_modified


class _StartOver(Exception):
    """The bytes of the ``.part`` cannot be continued: ask again without ``Range``."""


def download(
    url: str,
    path: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    progress: Progress | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
    chunk_size: int = CHUNK_SIZE,
) -> DownloadResult:
    """Download ``url`` into ``path``, continuing an interrupted earlier run if there is one.

    ``client`` is used as given (its timeout, its auth; redirects are followed); without one, a client with
    ``timeout`` is made and closed. ``headers`` are sent with every request (``Range``, ``If-Range`` and
    ``Accept-Encoding`` are the downloader's own). ``progress`` is called with (bytes on disk, total or
    ``None``); an exception it raises stops the download and propagates, the bytes so far kept for later.

    Raises :class:`~chute.exceptions.DownloadError` (error status, cut connection, short body; the ``.part``
    kept when it has bytes) or :class:`~chute.exceptions.IntegrityError` (the digest does not match).
    """
    target = Path(path)
    own = client is None
    http = httpx.Client(timeout=timeout, follow_redirects=True) if client is None else client
    try:
        with _locked_part(target.with_name(target.name + ".part")) as fd:
            return _Run(url, target, fd, http, progress, dict(headers or {}), chunk_size).run()
    finally:
        if own:
            http.close()


@contextlib.contextmanager
def _locked_part(part: Path) -> Iterator[int]:
    """The ``.part`` file, created if missing, opened for reading and writing and locked against other runs."""
    fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"another download into {part} is running") from None
            # A run that finished meanwhile renamed the file we opened: ours is no longer the .part.
            try:
                current = os.stat(part).st_ino
            except FileNotFoundError:
                current = None
            if os.fstat(fd).st_ino != current:
                raise DownloadError(f"another download into {part} was running")
        yield fd
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # already closed after a rename on Windows


class _Run:
    def __init__(
        self,
        url: str,
        target: Path,
        fd: int,
        client: httpx.Client,
        progress: Progress | None,
        headers: dict[str, str],
        chunk_size: int,
    ) -> None:
        self.url = url
        self.target = target
        self.part = target.with_name(target.name + ".part")
        self.sidecar = target.with_name(target.name + ".part.json")
        self.fd = fd
        self.client = client
        self.progress = progress
        self.headers = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-range", "accept-encoding")}
        self.chunk_size = chunk_size
        self.statuses: list[int] = []
        self.transferred = 0
        self.resumed_from = 0
        self.restart_reason: str | None = None

    # -- the run

    def run(self) -> DownloadResult:
        length = os.fstat(self.fd).st_size
        state = self._load_sidecar()
        if length and state is None:
            self._start_over("the partial file has no sidecar for this URL to tell what it holds")
        elif length and state is not None and state.validator is None:
            self._start_over("the server gave no strong ETag or Last-Modified to resume against")
            state = None
        elif state is not None and state.size is not None and length > state.size:
            self._start_over("the partial file is longer than the file")
            state = None
        try:
            state = self._transfer(state)
        except DownloadError as exc:
            raise self._failed(exc) from exc.__cause__
        except httpx.HTTPError as exc:
            raise self._failed(DownloadError(f"GET {self.url}: {_describe(exc)}")) from exc
        except httpx.InvalidURL as exc:
            raise self._failed(DownloadError(f"invalid URL {self.url!r}: {exc}")) from exc
        size = os.fstat(self.fd).st_size
        digest = state.digest
        if digest is not None:
            self._verify(digest)
        if os.name == "nt":  # pragma: no cover - Windows cannot rename an open file
            os.close(self.fd)
        os.replace(self.part, self.target)  # still locked on POSIX: no other run can slip in between
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sidecar)
        return DownloadResult(
            path=self.target,
            size=size,
            resumed_from=self.resumed_from,
            transferred=self.transferred,
            restarted=self.restart_reason is not None,
            restart_reason=self.restart_reason,
            digest_verified=digest is not None,
            digest=digest,
            statuses=tuple(self.statuses),
        )

    def _transfer(self, state: _State | None) -> _State:
        """Request until the ``.part`` holds the whole file; the state it belongs to."""
        while True:
            offset = os.fstat(self.fd).st_size
            resume = state if state is not None and state.validator is not None and offset > 0 else None
            headers = {**self.headers, "accept-encoding": "identity"}
            if resume is not None:
                headers |= {"range": f"bytes={offset}-", "if-range": str(resume.validator)}
            try:
                with self.client.stream("GET", self.url, headers=headers, follow_redirects=True) as response:
                    self.statuses.append(response.status_code)
                    if resume is not None:
                        state, done = self._continue(response, resume, offset)
                    else:
                        state, done = self._whole(response, offset), True
            except _StartOver as exc:
                self._start_over(str(exc))
                state = None
                continue
            if done:
                return state

    def _whole(self, response: httpx.Response, offset: int) -> _State:
        """A request without ``Range``: only 200 will do; the ``.part`` is replaced by its body."""
        if response.status_code != 200:
            raise _status_error(self.url, response)
        _require_identity(self.url, response)
        if offset:
            self._start_over(_why_200(response))
        etag, last_modified = _validators(response)
        length = _content_length(response)
        state = _State(self.url, etag, last_modified, length, _repr_digest(response))
        self._write_sidecar(state)
        self._receive(response, 0, length, length)
        return state

    def _continue(self, response: httpx.Response, state: _State, offset: int) -> tuple[_State, bool]:
        """A request with ``Range``: the state of the ``.part`` and whether it is now complete."""
        status = response.status_code
        if status == 200:
            return self._whole(response, offset), True
        if status == 416:
            total = _unsatisfied_total(response)
            if state.size is not None and offset == state.size and total in (None, state.size):
                self.resumed_from = offset
                return state, True
            raise _StartOver(f"the server has no bytes after {offset} (416)")
        if status != 206:
            raise _status_error(self.url, response)
        _require_identity(self.url, response)
        start, stop, total = self._fitting_range(response, state, offset)
        digest = _repr_digest(response)
        if self.resumed_from == 0:
            self.resumed_from = offset
        if state.size is None or (digest is not None and digest != state.digest):
            state.size, state.digest = total, digest or state.digest
            self._write_sidecar(state)
        self._receive(response, start, total, stop - start)
        return state, stop == total

    def _fitting_range(self, response: httpx.Response, state: _State, offset: int) -> tuple[int, int, int]:
        """(start, stop, total) of a 206 that continues the ``.part``; :class:`_StartOver` when it does not."""
        found = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if found is None or found[3] == "*":
            raise _StartOver(f"unusable 206 (Content-Range {response.headers.get('content-range')!r})")
        start, stop, total = int(found[1]), int(found[2]) + 1, int(found[3])
        etag, last_modified = _validators(response)
        if start != offset or stop <= start or stop > total:
            raise _StartOver(f"the server sent bytes {start}-{stop - 1} for a request from {offset}")
        if state.size is not None and total != state.size:
            raise _StartOver(f"the size changed from {state.size} to {total}")
        if state.etag is not None and etag is not None and etag != state.etag:
            raise _StartOver(f"the ETag changed from {state.etag} to {etag}")
        if state.etag is None and last_modified is not None and last_modified != state.last_modified:
            raise _StartOver(f"Last-Modified changed from {state.last_modified} to {last_modified}")
        length = _content_length(response)
        if length is not None and length != stop - start:
            raise _StartOver(f"Content-Length {length} does not match Content-Range {start}-{stop - 1}")
        return start, stop, total

    def _receive(self, response: httpx.Response, offset: int, total: int | None, expected: int | None) -> None:
        """Write the body at ``offset`` in writes of ``chunk_size``; exactly ``expected`` bytes, when known.

        Every write goes to its explicit position (``pwrite``) and the count moves on only after it: a Ctrl-C
        in the middle of a write can leave more correct bytes on disk than counted, never a byte twice.
        """
        done = offset
        pending = bytearray()

        def flush() -> None:
            nonlocal done
            written = 0
            with memoryview(pending) as view:
                while written < len(view):
                    written += _pwrite(self.fd, view[written:], done + written)
            done += written
            self.transferred += written
            pending.clear()

        if self.progress is not None:
            self.progress(done, total)
        try:
            for piece in response.iter_bytes():
                pending += piece
                if len(pending) >= self.chunk_size:
                    flush()
                    if self.progress is not None:
                        self.progress(done, total)
        except httpx.HTTPError:
            # The connection failed (raised by iter_bytes, so nothing was being written): the bytes received are
            # good, keep them to resume from. Anything else (Ctrl-C, a failing write, the progress callback)
            # may have stopped a write half-way: what reached the disk is correct, and the rest is dropped.
            flush()
            raise
        if pending:
            flush()
            if self.progress is not None:
                self.progress(done, total)
        if expected is not None and done - offset != expected:
            raise DownloadError(
                f"GET {self.url}: the connection ended after {done - offset} of {expected} bytes",
                status=response.status_code,
            )

    # -- the files

    def _load_sidecar(self) -> _State | None:
        """The sidecar if it is readable and for this URL; ``None`` otherwise."""
        try:
            data = json.loads(self.sidecar.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or data.get("url") != self.url:
            return None
        fields = {"etag": str, "last_modified": str, "size": int, "digest": str}
        if any(data.get(name) is not None and not isinstance(data[name], kind) for name, kind in fields.items()):
            return None
        return _State(self.url, data.get("etag"), data.get("last_modified"), data.get("size"), data.get("digest"))

    def _write_sidecar(self, state: _State) -> None:
        body = {"format": SIDECAR_FORMAT, **dataclasses.asdict(state)}
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with temporary.open("wb") as file:
            file.write(json.dumps(body, indent=1).encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.sidecar)

    def _start_over(self, reason: str) -> None:
        """Drop the bytes of the ``.part``, before anything says what they belong to."""
        if os.fstat(self.fd).st_size:
            self.restart_reason = reason
        os.ftruncate(self.fd, 0)
        self.resumed_from = 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sidecar)

    def _verify(self, expected: str) -> None:
        algorithm, _, _ = expected.partition("=")
        os.lseek(self.fd, 0, os.SEEK_SET)
        with open(self.fd, "rb", buffering=0, closefd=False) as file:
            actual = hashlib.file_digest(file, _DIGESTS[algorithm]).digest()
        found = f"{algorithm}=:{base64.b64encode(actual).decode('ascii')}:"
        if found != expected:
            self._discard()
            raise IntegrityError(
                f"GET {self.url}: the downloaded file has {found}, the server announced {expected}; it was deleted",
                expected=expected,
                actual=found,
            )

    def _discard(self) -> None:
        for name in (self.part, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _failed(self, error: DownloadError) -> DownloadError:
        """``error`` with the ``.part`` it leaves behind; an empty one is removed."""
        if os.fstat(self.fd).st_size == 0:
            self._discard()
            return error
        error.partial = self.part
        if "resume" not in str(error):
            error.args = (f"{error}; {self.part} kept: run again to resume",)
        return error


def _pwrite(fd: int, data: memoryview, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows has no pwrite
    return os.write(fd, data)  # pragma: no cover


# -- headers


def _validators(response: httpx.Response) -> tuple[str | None, str | None]:
    """(strong ETag, strong Last-Modified) of a response; each ``None`` when absent or weak.

    A Last-Modified date is strong when the response's ``Date`` is at least one second later (RFC 9110
    §8.8.2.2): nothing can have changed within the second it names without a later date to show for it.
    """
    etag = response.headers.get("etag")
    if etag is not None and (etag.startswith("W/") or not (len(etag) >= 2 and etag[0] == etag[-1] == '"')):
        etag = None
    last_modified = response.headers.get("last-modified")
    modified = _http_date(last_modified)
    date = _http_date(response.headers.get("date"))
    if modified is None or date is None or date - modified < 1:
        last_modified = None
    return etag, last_modified


def _http_date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _unsatisfied_total(response: httpx.Response) -> int | None:
    """The size in a 416's ``Content-Range: bytes */<size>``."""
    found = re.fullmatch(r"bytes\s+\*/(\d+)", response.headers.get("content-range", "").strip(), re.IGNORECASE)
    return int(found[1]) if found else None


def _why_200(response: httpx.Response) -> str:
    if "range" in response.request.headers and response.request.headers.get("if-range"):
        return "the server sent the whole file: it changed since the partial download, or it ignores ranges"
    return "the server sent the whole file"


def parse_repr_digest(value: str) -> dict[str, bytes]:
    """The digests of a ``Repr-Digest`` field (RFC 9530: a structured-field dictionary of byte sequences),
    by lower-cased algorithm; members that are not ``name=:<base64>:`` are skipped."""
    found = {}
    for member in value.split(","):
        name, sep, rest = member.strip().partition("=")
        item = rest.split(";", 1)[0].strip()
        if not sep or len(item) < 2 or item[0] != ":" or item[-1] != ":":
            continue
        try:
            found[name.strip().lower()] = base64.b64decode(item[1:-1], validate=True)
        except (binascii.Error, ValueError):
            continue
    return found


def _repr_digest(response: httpx.Response) -> str | None:
    """The digest to check the file against: the first of ``sha-256``, ``sha-512`` the server sent."""
    values = response.headers.get_list("repr-digest")
    digests = parse_repr_digest(",".join(values)) if values else {}
    for name, hash_name in _DIGESTS.items():
        if name in digests and len(digests[name]) == hashlib.new(hash_name).digest_size:
            return f"{name}=:{base64.b64encode(digests[name]).decode('ascii')}:"
    return None


def _require_identity(url: str, response: httpx.Response) -> None:
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise DownloadError(f"GET {url}: the server sent Content-Encoding {coding} though asked for identity")


def _status_error(url: str, response: httpx.Response) -> DownloadError:
    """The error for an unexpected status, with the server's explanation if it gave one."""
    body = b""
    for piece in response.iter_bytes():
        body += piece
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    detail = _explanation(response.headers.get("content-type", ""), body[:_ERROR_BODY_LIMIT])
    message = f"GET {url}: {response.status_code} {response.reason_phrase}".rstrip()
    return DownloadError(f"{message}: {detail}" if detail else message, status=response.status_code, detail=detail)


def _explanation(content_type: str, body: bytes) -> str | None:
    """The ``detail`` (or ``title``) of a problem JSON body, or the first line of a short text one."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type.endswith(("/json", "+json")):
        try:
            data: Any = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict):
            for key in ("detail", "title"):
                if isinstance(data.get(key), str) and data[key]:
                    return _one_line(data[key])
        return None
    if media_type.startswith("text/") and media_type != "text/html":
        text = body.decode("utf-8", "replace").strip()
        return _one_line(text.splitlines()[0]) if text else None
    return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: httpx.HTTPError) -> str:
    kind = {
        httpx.ConnectError: "cannot connect",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "the server stopped sending",
        httpx.RemoteProtocolError: "the connection was cut",
        httpx.ReadError: "the connection was cut",
    }
    for cls in type(exc).__mro__:
        if cls in kind:
            return f"{kind[cls]} ({exc})" if str(exc) else kind[cls]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- file names

_INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_WINDOWS_RESERVED = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{kind}{n}" for kind in ("COM", "LPT") for n in range(1, 10)}
_PARAMETER = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
MAX_NAME_BYTES = 255


def safe_filename(name: str) -> str | None:
    """``name`` made a plain file name for the current folder, or ``None`` when nothing usable is left.

    Only the last path segment is kept (``/`` and ``\\`` both separate), invisible and control characters go,
    leading dots (``..``, hidden files) and trailing dots and spaces are stripped, characters Windows forbids
    become ``_``, device names get a ``_`` prefix, and the name is cut to 255 UTF-8 bytes keeping its suffix.
    """
    name = posixpath.basename(name.replace("\\", "/"))
    name = "".join(c for c in name if unicodedata.category(c) not in _INVISIBLE)
    name = _WINDOWS_RESERVED.sub("_", name).strip().lstrip(".").rstrip(". ")
    if not name:
        return None
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        if not dot or not 0 < len(suffix.encode()) <= 16:
            stem, suffix = name, ""
        keep = MAX_NAME_BYTES - len(suffix.encode()) - (1 if suffix else 0)
        stem = stem.encode()[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{suffix}" if suffix else stem
    return name


def filename_from(content_disposition: str | None, url: str) -> str:
    """The name to save a download as: ``filename*`` (RFC 8187) of ``Content-Disposition``, then
    ``filename``, then the URL's last path segment, each made safe by :func:`safe_filename`; else
    ``download``. Never a path: the result names a file in the current folder."""
    candidates = []
    if content_disposition:
        parameters: dict[str, str] = {}
        for name, value in _PARAMETER.findall(content_disposition):
            parameters.setdefault(name.lower(), value.strip())
        if "filename*" in parameters:
            candidates.append(_extended_value(parameters["filename*"]))
        if "filename" in parameters:
            value = parameters["filename"]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            candidates.append(value)
    candidates.append(unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2]))
    for candidate in candidates:
        if candidate and (name := safe_filename(candidate)):
            return name
    return "download"


def _extended_value(value: str) -> str | None:
    """The text of an RFC 8187 ``charset'language'percent-encoded`` value (UTF-8 or ISO-8859-1)."""
    charset, sep, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not (sep and sep2) or charset.lower() not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return unquote(encoded, encoding=charset.lower(), errors="strict")
    except UnicodeDecodeError:
        return None
