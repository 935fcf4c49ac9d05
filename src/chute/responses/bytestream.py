"""``ByteStream``: bytes that already are the body (a database's own CSV, say) as an ASGI response.

Theory of operation. The source is an async iterable of ``bytes`` in their final form; each chunk is sent as it
comes, within the send deadline, under :func:`~chute.responses.sending.supervise`: the client leaving cancels the
response wherever it is (waiting in the source or in a send) and the source is closed at once with ``aclose()``.
Nothing is coalesced or held back here: a source that has more ready at once should hand it over at once, as
:func:`chute.sources.postgres.postgres_table_csv` does with whatever COPY has delivered.

The headers go out with the first chunk. A source that fails before it gets a problem JSON response (its status
for an :class:`~chute.exceptions.HTTPError`, else 500); after it, the failure is logged and re-raised as
:class:`~chute.exceptions.StreamAborted` (its ``index`` counts bytes), so the server aborts the connection and the
client never mistakes a truncated body for a complete one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterable, Mapping

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chute.exceptions import StreamAborted
from chute.headers import content_disposition
from chute.responses.sending import Outcome, Sender, answer_early_failure, supervise
from chute.sources.iterables import aclose_quietly

logger = logging.getLogger("chute")


class ByteStream(Response):
    """Stream ``source``, an async iterable of ``bytes`` already encoded as ``media_type``, to the client.

    ``media_type`` is sent as the ``Content-Type`` as given (say ``"text/csv; charset=utf-8"``). ``filename`` adds
    a ``Content-Disposition: attachment`` header; ``send_timeout`` cuts a client that stops reading.
    ``bytes_sent`` and ``outcome`` tell how far the body got and how it ended.
    """

    def __init__(
        self,
        source: AsyncIterable[bytes],
        *,
        media_type: str,
        filename: str | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
        send_timeout: float | None = 60.0,
    ) -> None:
        self.source = source
        self.media_type: str = media_type
        self.filename = filename
        self.status_code = status_code
        self.background = background
        self.send_timeout = send_timeout
        self.init_headers(headers)
        self.outcome: Outcome = "pending"
        self.bytes_sent = 0

    def start_message(self) -> Message:
        headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-type", b"content-length")]
        headers.append((b"content-type", self.media_type.encode("latin-1")))
        headers.append((b"x-content-type-options", b"nosniff"))
        if self.filename is not None:
            headers.append((b"content-disposition", content_disposition(self.filename).encode("latin-1")))
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            await aclose_quietly(aiter(self.source))
            await send(self.start_message())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
        else:
            await supervise(
                self,
                receive,
                functools.partial(self._pump, scope, receive, send),
                position=lambda: self.bytes_sent,
                unit="bytes",
            )
        if self.background is not None and self.outcome == "complete":
            await self.background()

    async def _pump(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = Sender(send, self.start_message(), self.send_timeout)
        failure: Exception | None = None
        chunks = aiter(self.source)
        try:
            while True:
                # Only the source's own failures are caught here; a failed send (the client's doing) is
                # supervise()'s to report.
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    failure = exc
                    break
                if chunk:
                    await sender.body(chunk, more=True)
                    self.bytes_sent += len(chunk)
        finally:
            await aclose_quietly(chunks)
        if failure is None:
            await sender.body(b"", more=False)
            self.outcome = "complete"
            return
        self.outcome = "error"
        if not sender.started:
            await answer_early_failure(failure, scope, receive, send)
            return
        logger.error("stream aborted after %d bytes: %s", self.bytes_sent, failure, exc_info=failure)
        raise StreamAborted(str(failure), index=self.bytes_sent) from failure
