"""Resumable exports: :func:`export` fetches an ordered NDJSON export into a file, across cut connections.

The protocol (see :class:`~chute.responses.RecordStream`'s ``resume_token`` and the service's ``/exports``): asked
with ``resumable=true``, the export ends every chunk with a control line ``{"@resume": "<token>"}`` (the position
after the records before it) and the whole body with ``{"@end": {"records": N}}``. Control lines are not data
and are not written to the file. When the connection breaks, the file is cut back to the end of the last record
before the last ``@resume`` line (records after it may be incomplete, and will come again), and the export is
asked for again with ``after=<token>``: the server continues after exactly that record, by key, so the file ends
with no gap and no duplicate. A response that ends without its ``@end`` line was cut, however cleanly the
connection closed.

The file is written as ``<path>.part`` and renamed into place when complete. State lives in this process: an
export killed with the process starts over on the next run (its records are cheap to ask for again, unlike the
bytes of a large file; see :func:`~chute.client.download` for that).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import msgspec

from chute.client.downloads import _describe, _status_error
from chute.exceptions import DownloadError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=120.0)
DEFAULT_ATTEMPTS = 10
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/ndjson")
_CONTROL = b'{"@'


class _Control(msgspec.Struct):
    resume: str | None = msgspec.field(default=None, name="@resume")
    end: dict[str, int] | None = msgspec.field(default=None, name="@end")


_decode_control = msgspec.json.Decoder(_Control).decode


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export` did: ``records`` in the file, ``attempts`` responses it took (1: no break),
    ``resumed`` how many of them continued with a token."""

    path: Path
    records: int
    size: int
    attempts: int
    resumed: int


class _Cut(Exception):
    """The response ended before its ``@end`` line."""


def export(
    url: str,
    path: str | os.PathLike[str],
    *,
    client: httpx.Client | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
    progress: Callable[[int], object] | None = None,
) -> ExportResult:
    """Fetch the NDJSON export at ``url`` into ``path``, resuming after each break, up to ``attempts`` responses
    in a row that bring no new record. ``progress`` is called with the records written so far.

    Raises :class:`~chute.exceptions.DownloadError` for an error status, a body that is not NDJSON, a server
    that offers no resume token, or too many breaks without progress.
    """
    target = Path(path)
    part = target.with_name(target.name + ".part")
    own = client is None
    http = httpx.Client(timeout=timeout, follow_redirects=True) if client is None else client
    writer = _Writer(part)
    try:
        token: str | None = None
        made, resumed, fruitless = 0, 0, 0
        while True:
            made += 1
            resumed += token is not None
            before = writer.records
            try:
                _fetch(http, url, token, headers or {}, writer, progress)
            except (httpx.TransportError, _Cut) as exc:
                writer.rewind()
                token = writer.token
                fruitless = 0 if writer.records > before else fruitless + 1
                if fruitless >= attempts:
                    why = _describe(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
                    raise DownloadError(f"GET {url}: {why}; gave up after {fruitless} attempts in a row") from exc
                time.sleep(min(0.1 * 2**fruitless, 5.0))
                continue
            writer.close()
            os.replace(part, target)
            return ExportResult(target, writer.records, writer.size, made, resumed)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)  # its resume point lived in this process: nothing can continue it
        raise
    finally:
        if own:
            http.close()


def _fetch(
    http: httpx.Client,
    url: str,
    token: str | None,
    headers: Mapping[str, str],
    writer: _Writer,
    progress: Callable[[int], object] | None,
) -> None:
    params = {"resumable": "true", "format": "ndjson"} | ({"after": token} if token is not None else {})
    request = http.build_request("GET", url, params=params, headers={"accept": NDJSON_TYPES[0], **headers})
    response = http.send(request, stream=True)
    try:
        if response.status_code != 200:
            raise _status_error(url, response)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in NDJSON_TYPES:
            raise DownloadError(f"GET {url}: the server sent {media_type or 'no type'}, not NDJSON")
        tail = b""
        start = writer.records
        for chunk in response.iter_bytes():  # decoded: a compressed export resumes the same way
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            end = writer.take(lines)
            if end is not None:
                if end.get("records") != writer.records - start:
                    raise DownloadError(
                        f"GET {url}: the end record counts {end.get('records')} records, "
                        f"{writer.records - start} arrived"
                    )
                return
            if progress is not None:
                progress(writer.records)
        raise _Cut("the export ended before its end record")
    finally:
        response.close()


class _Writer:
    """Appends records to the ``.part`` and remembers where the last ``@resume`` line left it."""

    def __init__(self, part: Path) -> None:
        self.file = part.open("wb")
        self.records = 0  # records written, as of the last resume point once rewound
        self.size = 0
        self.token: str | None = None
        self._mark = (0, 0)  # (size, records) at the last @resume line

    def take(self, lines: list[bytes]) -> dict[str, int] | None:
        """Write the data lines and follow the control lines; the end record once it came."""
        data: list[bytes] = []
        for line in lines:
            if not line.startswith(_CONTROL):
                if line:
                    data.append(line)
                continue
            self._write(data)
            data = []
            control = _decode_control(line)
            if control.resume is not None:
                self.token = control.resume
                self._mark = (self.size, self.records)
            elif control.end is not None:
                return control.end
        self._write(data)
        return None

    def _write(self, data: list[bytes]) -> None:
        if data:
            data.append(b"")
            block = b"\n".join(data)
            self.file.write(block)
            self.size += len(block)
            self.records += len(data) - 1

    def rewind(self) -> None:
        """Forget what came after the last resume point: the server sends it again."""
        self.size, self.records = self._mark
        self.file.flush()
        self.file.truncate(self.size)
        self.file.seek(self.size)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
