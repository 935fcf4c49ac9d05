"""Server-Sent Events, received: :class:`EventStreamParser` turns bytes into events, and :func:`events` follows a
feed the way a browser's ``EventSource`` does, reconnecting when the connection drops.

The parser is WHATWG HTML §9.2.6 ("Interpreting an event stream"), incremental: bytes arrive in chunks cut
anywhere (inside a UTF-8 sequence, between the CR and the LF of a CRLF) and the events come out exactly as from
the whole stream at once. It yields :class:`ReceivedEvent`: the :class:`~chute.encoders.sse.Event` the server
side encodes (so a received event can be sent on as it is), whose ``data`` is always text. Event's validation
never gets in the way, since a parsed field holds no line break and an ``id`` with NUL is ignored. Like a
browser's ``MessageEvent``, an event's ``event`` is its type (``None`` for the default, ``message``) and its
``id`` the *last event id* when it was dispatched: that of the latest ``id`` field, which may have come with an
earlier event (``None`` when there was none or an empty ``id`` field reset it).

:func:`events` answers each response as the specification says, with the choices it leaves open made explicit:

- 200 with ``Content-Type: text/event-stream``: events, until the connection ends or fails.
- 204: the server says "stop": the iteration ends normally.
- 429 or 503 with ``Retry-After``: the server is busy (a chute server at its cap of live feeds answers
  503 + ``Retry-After``); try again after that many seconds. Without ``Retry-After``, an error like any other.
- any other status, or a 200 that is not ``text/event-stream``: :class:`~chute.exceptions.FeedError`.

A connection that ends, fails or stays silent longer than the read timeout is opened again with
``Last-Event-ID``, after the reconnection time (the ``retry`` argument, then what the server's ``retry:`` fields
say) with jitter, growing exponentially while attempts fail in a row (:func:`reconnect_delay`).
"""

from __future__ import annotations

import codecs
import dataclasses
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping

import anyio
import httpx

from chute.client.downloads import _describe, _explanation, _http_date
from chute.encoders.sse import Event
from chute.exceptions import ConfigurationError, FeedError

DEFAULT_RETRY = 3.0
"""Seconds to wait before reconnecting until the server says otherwise with ``retry:`` (the spec suggests a few)."""
DEFAULT_MAX_RETRY = 30.0
"""The most the exponential backoff grows to, in seconds (a longer ``retry:`` or ``Retry-After`` still wins)."""
DEFAULT_READ_TIMEOUT = 60.0
"""Seconds without a byte before the connection counts as dead: more than a server's heartbeat (chute: 15)."""
CONNECT_TIMEOUT = 10.0
BACKOFF_STEP = 0.1
"""The smallest step the backoff grows from, so that ``retry: 0`` cannot make failing attempts a busy loop."""
RETRY_LIMIT_MS = 10**15
MAX_EVENT_SIZE = 16 * 1024 * 1024
"""Characters one event may hold (its unfinished line included): a server that never ends a line or an event
must not grow the client's memory without bound."""
"""``retry:`` values are clamped to this (31,000 years): longer digit strings would not even convert."""

_LINE_END = re.compile(r"\r\n|\r|\n")
_RETRY_STATUSES = (429, 503)
_RETRYABLE = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_ERROR_BODY_LIMIT = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ReceivedEvent(Event):
    """An event as a client receives it: ``data`` is text (an event without data is not dispatched), ``event``
    the type (``None``: ``message``), ``id`` the last event id at its dispatch; ``retry`` and ``comment`` stay
    ``None``, as they are not part of events."""

    data: str = ""


class EventStreamParser:
    """WHATWG event stream parsing, incremental and synchronous: :meth:`feed` it bytes, get the events they
    complete; call :meth:`end` when the stream ends (what is unfinished is discarded, as the spec says).

    ``last_event_id`` seeds the id of the stream, so that after a reconnection events without an ``id`` field
    keep the id the client resumed from (as Chromium does; the spec's fresh buffer would make it empty).
    ``on_comment`` is called with the text of each comment line (after the ``:``), e.g. heartbeats.
    :attr:`retry` is the latest valid ``retry:`` value in milliseconds (``None`` until one arrives) and
    :attr:`last_event_id` what a reconnection sends as ``Last-Event-ID``.
    """

    def __init__(
        self,
        *,
        last_event_id: str | None = None,
        on_comment: Callable[[str], object] | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
    ) -> None:
        self.on_comment = on_comment
        self.max_event_size = max_event_size
        self._data_size = 0  # characters of the data lines of the event being built
        self._partial_size = 0  # characters of the unfinished line
        self.retry: int | None = None
        self._last_id = last_event_id or ""
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial: list[str] = []
        self._after_cr = False
        self._data: list[str] = []
        self._type = ""
        self._id = self._last_id

    @property
    def last_event_id(self) -> str | None:
        """The last event id string: set when an event is dispatched (even one without data), ``None`` if
        empty (never set, or reset by an empty ``id`` field)."""
        return self._last_id or None

    def feed(self, chunk: bytes) -> list[ReceivedEvent]:
        """The events that ``chunk`` completes, in order."""
        out: list[ReceivedEvent] = []
        text = self._decoder.decode(chunk)
        if not text:
            return out
        # A CR ends a line at once (no waiting for the next chunk); an LF right after it belongs to it.
        start = 1 if self._after_cr and text[0] == "\n" else 0
        for match in _LINE_END.finditer(text, start):
            self._partial.append(text[start : match.start()])
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
            self._line(line, out)
            start = match.end()
        if start < len(text):
            self._partial.append(text[start:])
            self._partial_size += len(text) - start
        if self._data_size + self._partial_size > self.max_event_size:
            raise FeedError(f"an event of more than {self.max_event_size:,} characters: the stream is refused")
        self._after_cr = text[-1] == "\r"
        return out

    def end(self) -> None:
        """The stream ended: an unfinished line or event is discarded (its ``id`` too), and the parser is ready
        for a new stream. :attr:`retry` and :attr:`last_event_id` are kept."""
        self._reset()

    def _reset(self) -> None:
        # utf-8-sig drops one leading BOM, even split across chunks; invalid bytes become U+FFFD as the spec says.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial = []
        self._after_cr = False
        self._data = []
        self._type = ""
        self._id = self._last_id
        self._data_size = 0
        self._partial_size = 0

    def _line(self, line: str, out: list[ReceivedEvent]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            if self.on_comment is not None:
                self.on_comment(line[1:])
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) if len(value.lstrip("0")) <= 15 else RETRY_LIMIT_MS
        # any other field is ignored

    def _dispatch(self, out: list[ReceivedEvent]) -> None:
        self._last_id = self._id
        if self._data:
            out.append(ReceivedEvent(data="\n".join(self._data), event=self._type or None, id=self._last_id or None))
        self._data = []
        self._type = ""
        self._data_size = 0


def reconnect_delay(
    reconnection_time: float,
    failures: int,
    *,
    max_retry: float = DEFAULT_MAX_RETRY,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next connection: uniformly random between ``reconnection_time`` and a ceiling
    of ``1.5 * 2**failures * max(reconnection_time, 0.1)``, the ceiling capped at ``max_retry``.

    ``failures`` counts the attempts that failed in a row (0 after a connection that delivered bytes), so the
    ceiling doubles with each failure; the jitter keeps clients that lost the same server apart. The wait
    is never shorter than ``reconnection_time``: the server's ``retry:`` (or ``Retry-After``) wins over
    ``max_retry``. ``jitter`` returns a number in [0, 1) (injectable for tests).
    """
    step = max(reconnection_time, BACKOFF_STEP)
    ceiling = min(max(max_retry, reconnection_time), step * 1.5 * 2.0 ** min(max(failures, 0), 64))
    ceiling = max(ceiling, reconnection_time)
    return reconnection_time + jitter() * (ceiling - reconnection_time)


async def events(
    url: str,
    *,
    last_event_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    retry: float = DEFAULT_RETRY,
    max_retry: float = DEFAULT_MAX_RETRY,
    read_timeout: float | None = DEFAULT_READ_TIMEOUT,
    max_failures: int | None = None,
    on_reconnect: Callable[[str, float], object] | None = None,
    client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[ReceivedEvent, None]:
    """The events of the Server-Sent Events feed at ``url``, for as long as it lasts, across reconnections.

    Each request sends ``Accept: text/event-stream``, ``Cache-Control: no-cache``, ``headers`` and, once an id
    is known (``last_event_id`` or one the server sent), ``Last-Event-ID``. ``retry`` is the reconnection time in
    seconds until the server sends ``retry:``; ``max_retry`` caps the backoff (:func:`reconnect_delay`);
    ``read_timeout`` is the seconds without a byte after which the connection is dropped and opened again
    (``None``: wait forever): more than the server's heartbeat interval.
    ``on_reconnect`` is called with why and the seconds it will wait, before each wait. An attempt fails when it
    delivers no byte (no connection, a 503, a connection that ends empty); ``max_failures`` gives up after that
    many in a row (default: never, like a browser). ``client`` is used as given and
    left open (``read_timeout`` applies to these requests still); without one, a client is made and closed.

    This is an async generator: close it (``contextlib.aclosing``) and the connection closes at once. The
    iteration ends when the server answers 204; :class:`~chute.exceptions.FeedError` when it cannot go on (see
    the module documentation), with ``status`` and the server's ``detail`` when an answer refused it.
    """
    if retry < 0 or max_retry < 0:
        raise ConfigurationError(f"reconnection times are not negative: retry={retry!r}, max_retry={max_retry!r}")
    if max_failures is not None and max_failures < 1:
        raise ConfigurationError(f"max_failures is at least 1 (or None): {max_failures!r}")
    given = httpx.Headers(headers or {})
    known_id = last_event_id if last_event_id is not None else given.get("last-event-id")
    base = [(k, v) for k, v in given.raw if k.lower() not in (b"accept", b"cache-control", b"last-event-id")]
    base += [(b"accept", b"text/event-stream"), (b"cache-control", b"no-cache")]
    timeouts = httpx.Timeout(CONNECT_TIMEOUT, read=read_timeout)
    reconnection_time = retry
    failures = 0
    http = httpx.AsyncClient(follow_redirects=True) if client is None else client
    try:
        while True:
            request_headers = list(base)
            if known_id:
                request_headers.append((b"last-event-id", known_id.encode()))
            delivered = False
            floor = 0.0
            cause: Exception | None = None
            try:
                async with http.stream(
                    "GET", url, headers=request_headers, timeout=timeouts, follow_redirects=True
                ) as response:
                    status = response.status_code
                    if status == 204:
                        return
                    if status != 200:
                        wait = _retry_after(response) if status in _RETRY_STATUSES else None
                        if wait is None:
                            raise await _status_error(url, response)
                        floor = wait
                        why = f"{status} {response.reason_phrase}".rstrip() + f"; Retry-After {wait:g} s"
                    else:
                        _require_event_stream(url, response)
                        parser = EventStreamParser(last_event_id=known_id)
                        async for chunk in response.aiter_bytes():
                            delivered = delivered or bool(chunk)
                            batch = parser.feed(chunk)
                            known_id = parser.last_event_id
                            if parser.retry is not None:
                                reconnection_time = parser.retry / 1000
                            for event in batch:
                                yield event
                        why = "the server closed the stream"
            except _RETRYABLE as exc:
                why, cause = _describe(exc), exc
            except httpx.HTTPError as exc:
                raise FeedError(f"GET {url}: {_describe(exc)}") from exc
            except httpx.InvalidURL as exc:
                raise FeedError(f"invalid URL {url!r}: {exc}") from exc
            failures = 0 if delivered else failures + 1
            if max_failures is not None and failures >= max_failures:
                raise FeedError(f"GET {url}: {why}; gave up after {failures} failed attempts in a row") from cause
            delay = reconnect_delay(max(reconnection_time, floor), failures, max_retry=max_retry)
            if on_reconnect is not None:
                on_reconnect(why, delay)
            await anyio.sleep(delay)
    finally:
        if client is None:
            await http.aclose()


def _require_event_stream(url: str, response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "text/event-stream":
        found = f"Content-Type {content_type}" if content_type else "no Content-Type"
        raise FeedError(f"GET {url}: the server sent {found}, not text/event-stream", status=response.status_code)


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` asks to wait (a number of seconds or an HTTP date); ``None`` without one."""
    value = response.headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        return float(int(digits)) if len(digits) <= 12 else 1e12
    date = _http_date(value) if value else None
    return None if date is None else max(0.0, date - time.time())


async def _status_error(url: str, response: httpx.Response) -> FeedError:
    """The error for a refusing status, with the server's explanation if it gave one."""
    body = b""
    try:
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status says enough
    detail = _explanation(response.headers.get("content-type", ""), body[:_ERROR_BODY_LIMIT])
    message = f"GET {url}: {response.status_code} {response.reason_phrase}".rstrip()
    return FeedError(f"{message}: {detail}" if detail else message, status=response.status_code, detail=detail)
