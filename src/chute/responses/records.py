"""``RecordStream``: a stream of records as CSV, NDJSON or a JSON array, as an ASGI response.

Theory of operation. Three tasks share one task group:

- the *producer* drains the source into a :class:`~chute.sources.iterables.Batcher` (see that module);
- the *pump* (the response's own task) takes batches, encodes them, coalesces the bytes in a
  :class:`~chute.chunker.Chunker` and sends one ASGI message per chunk. The awaited ``send`` is the only
  checkpoint on the hot path: when the client reads slowly, ``send`` blocks, the batcher fills, and the
  producer suspends — backpressure reaches the source with one chunk and one batch in memory;
- the *watcher* waits for ``http.disconnect`` and cancels the group, so the producer stops and closes its source
  wherever it is suspended (in the source, or waiting for room under backpressure).

The headers go out with the first chunk, or ``max_latency`` after the start if the source is slow. A source
that fails before that gets a problem JSON response; after that, the failure is logged with the record index and
re-raised as :class:`~chute.exceptions.StreamAborted`, so the server aborts the connection without the final
empty chunk and the client sees a truncated transfer, never a short body that looks complete.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chute.chunker import DEFAULT_MAX_LATENCY, DEFAULT_TARGET, Chunker
from chute.encoders import CSVEncoder, Encoder, NDJSONEncoder
from chute.exceptions import ConfigurationError, EncodeError, HTTPError, StreamAborted
from chute.formats import Format, lookup, negotiate
from chute.headers import content_disposition
from chute.locales import CSVLocale
from chute.problems import problem_response
from chute.responses.sending import Outcome, Sender, answer_early_failure, supervise
from chute.sources.iterables import Batcher, Source, aclose_quietly, produce

logger = logging.getLogger("chute")

END_KEY = "@end"
RESUME_KEY = "@resume"
"""Key of the end-of-stream record: ``{"@end": {"records": N}}`` is the last NDJSON line / array element."""

FIRST_BATCH = 64
"""Records in the first batch; later batches are sized from the bytes per record seen so far."""
MAX_BATCH = 65536


class RecordStream(Response):
    """Stream ``source`` to the client as CSV, NDJSON or a JSON array.

        ``source`` is a sync or async iterable of records (dicts, tuples/lists with ``columns``, dataclasses,
        pydantic models, msgspec Structs) or, with ``batched=True``, of lists of records. Sync sources are drained
        in a worker thread, many records per hop.

        ``format`` fixes the format (``"csv"``, ``"ndjson"``, ``"jsonl"``, ``"json"``); without it the format is
        negotiated by ``Accept`` among ``formats`` (first is the default), with a 406 problem response listing the
        supported media types when none is acceptable.

        ``end_record=True`` appends ``{"@end": {"records": N}}`` to NDJSON and JSON bodies so a client can verify it
        got everything even through intermediaries. ``send_timeout`` cuts a client that stops reading.
        ``filename`` adds a ``Content-Disposition: attachment`` header (the format's extension is appended when the
        name has none). ``delimiter`` and ``bom`` configure CSV; ``locale`` (a :class:`~chute.locales.CSVLocale`,
    see :func:`~chute.locales.choose_csv_locale`) localizes CSV numbers and dates, sets its delimiter and
    ``Content-Language``.

        ``resume_token(record, count)``, for sources in a stable order, makes NDJSON bodies resumable: after every
        chunk comes a line ``{"@resume": token}``, the token of the chunk's last record (``count`` is the number of
        records of this body up to and including it), so a client that loses the
        connection keeps what it got up to the last such line and asks for the rest with that token. (CSV has no
        place for it and a JSON array cannot be continued; other formats ignore it.)
    """

    def __init__(
        self,
        source: Source,
        *,
        format: str | None = None,
        formats: Sequence[str] = ("ndjson", "json", "csv"),
        columns: Sequence[str] | None = None,
        batched: bool = False,
        filename: str | None = None,
        end_record: bool = False,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
        chunk_size: int = DEFAULT_TARGET,
        max_latency: float = DEFAULT_MAX_LATENCY,
        send_timeout: float | None = 60.0,
        delimiter: str = ",",
        bom: bool = False,
        locale: CSVLocale | None = None,
        resume_token: Callable[[Any, int], str] | None = None,
    ) -> None:
        self.source = source
        self.resume_token = resume_token
        self.fixed = lookup(format) if format is not None else None
        self.formats = [lookup(name)[0] for name in formats]
        if not self.formats and self.fixed is None:
            raise ConfigurationError("at least one format is needed")
        self.columns = tuple(columns) if columns is not None else None
        self.batched = batched
        self.filename = filename
        self.end_record = end_record
        self.status_code = status_code
        self.background = background
        self.chunk_size = chunk_size
        self.max_latency = max_latency
        self.send_timeout = send_timeout
        self.locale = locale
        self.delimiter = locale.delimiter if locale is not None else delimiter
        self.bom = bom
        CSVEncoder(columns, delimiter=self.delimiter)  # validate the CSV options here, at the call site
        self.media_type = self.fixed[1] if self.fixed else None
        self.init_headers(headers)
        self.outcome: Outcome = "pending"
        self.records_sent = 0

    def negotiate(self, scope: Scope) -> tuple[Format, str]:
        if self.fixed is not None:
            return self.fixed
        return negotiate(Headers(scope=scope).get("accept"), self.formats)

    def make_encoder(self, fmt: Format) -> Encoder:
        if fmt.encoder is CSVEncoder:
            return CSVEncoder(self.columns, delimiter=self.delimiter, bom=self.bom, locale=self.locale)
        return fmt.encoder(self.columns)

    def start_message(self, fmt: Format, media_type: str) -> Message:
        headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-type", b"content-length")]
        headers.append((b"content-type", fmt.content_type(media_type).encode("latin-1")))
        headers.append((b"x-content-type-options", b"nosniff"))
        if self.locale is not None and fmt.encoder is CSVEncoder:
            headers.append((b"content-language", self.locale.tag.encode("ascii")))
        if self.fixed is None:
            headers.append((b"vary", b"Accept"))
        if self.filename is not None:
            # Only the base name is sent, so only its own dot counts as an extension (not one in "../").
            base = posixpath.basename(self.filename.replace("\\", "/"))
            name = self.filename if "." in base else f"{self.filename}.{fmt.extension(media_type)}"
            headers.append((b"content-disposition", content_disposition(name).encode("latin-1")))
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            fmt, media_type = self.negotiate(scope)
        except HTTPError as exc:
            self.outcome = "refused"
            await self._close_source()
            await problem_response(exc)(scope, receive, send)
            return
        start = self.start_message(fmt, media_type)
        if scope.get("method") == "HEAD":
            await self._close_source()
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
        else:
            await self._stream(scope, receive, send, self.make_encoder(fmt), start)
        if self.background is not None and self.outcome == "complete":
            await self.background()

    async def _close_source(self) -> None:
        """Close a source that will never be iterated (HEAD, 406), so whatever it holds is released."""
        if hasattr(self.source, "aclose"):
            await aclose_quietly(self.source)  # type: ignore[arg-type]
        elif hasattr(self.source, "close"):
            await anyio.to_thread.run_sync(self.source.close)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, encoder: Encoder, start: Message) -> None:
        batcher = Batcher(FIRST_BATCH, self.max_latency)
        await supervise(
            self,
            receive,
            functools.partial(self._pump, scope, receive, send, batcher, encoder, start),
            position=lambda: self.records_sent,
            unit="records",
            helpers=[functools.partial(produce, self.source, batcher, batched=self.batched)],
        )

    def _resume_line(self, last: Any, count: int) -> bytes:
        assert self.resume_token is not None
        return msgspec.json.encode({RESUME_KEY: self.resume_token(last, count)}) + b"\n" if last is not None else b""

    async def _pump(
        self, scope: Scope, receive: Receive, send: Send, batcher: Batcher, encoder: Encoder, start: Message
    ) -> None:
        chunker = Chunker(self.chunk_size, self.max_latency)
        sender = Sender(send, start, self.send_timeout)
        # The first wait is bounded even with nothing pending, so the headers of a slow stream go out promptly.
        headers_due: float | None = time.monotonic() + self.max_latency
        resumable = self.resume_token is not None and isinstance(encoder, NDJSONEncoder)
        last: Any = None  # the last record encoded: every chunk released ends with it
        while True:
            items = await batcher.take(headers_due if chunker.deadline is None else chunker.deadline)
            headers_due = None
            done, failure = batcher.done, batcher.error
            data = b""
            if items:
                try:
                    data = encoder.encode(items)
                except EncodeError as exc:
                    done, failure = True, exc
                if data:
                    batcher.limit = max(1, min(MAX_BATCH, self.chunk_size * len(items) // len(data)))
                    last = items[-1] if encoder.count else None
            chunk = chunker.push(data)
            if done:
                pending = (chunk or b"") + chunker.flush()
                break
            if chunk:
                await sender.body(chunk + self._resume_line(last, encoder.count) if resumable else chunk, more=True)
                self.records_sent = encoder.count
            elif not sender.started:
                await sender.start()

        if failure is None:
            end = {END_KEY: {"records": encoder.count}} if self.end_record and encoder.supports_end_record else None
            await sender.body(pending + encoder.finish(end), more=False)
            self.records_sent = encoder.count
            self.outcome = "complete"
            return
        self.outcome = "error"
        if not sender.started:
            await answer_early_failure(failure, scope, receive, send)
            return
        # Hand over the good records before the cut: a client that resumes loses nothing it was sent.
        if pending:
            await sender.body(pending + self._resume_line(last, encoder.count) if resumable else pending, more=True)
            self.records_sent = encoder.count
        logger.error("stream aborted after %d records: %s", self.records_sent, failure, exc_info=failure)
        raise StreamAborted(str(failure), index=self.records_sent) from failure
