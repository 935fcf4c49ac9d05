"""``EventStream``: a live feed of Server-Sent Events as an ASGI response.

Theory of operation. A producer task moves items from the source into a zero-buffer memory stream; the pump takes
them one at a time, waiting at most ``heartbeat`` seconds, and sends a comment when nothing came (so proxies and
clients see a live connection only when it is idle). Every event is its own send: a feed is about latency, and
nothing is buffered or compressed. :func:`~chute.responses.sending.supervise` stops everything when the client
leaves (the source is closed with ``aclose()``, releasing its subscription) and cuts a client that stops
reading after ``send_timeout``. A :class:`StreamLimit` caps concurrent feeds: past it, 503 with ``Retry-After``.

A feed never ends by itself, so a server that waits for open responses before it stops would wait forever.
Every open feed of the process is registered; :func:`close_feeds` (called by :mod:`chute.protocol` when uvicorn
begins to shut down) makes each one send a comment and a short ``retry:`` hint and end cleanly: clients
reconnect, with their ``Last-Event-ID``, to whichever server answers next.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterable, Mapping
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chute.brokers.base import Message
from chute.encoders.sse import Event, comment
from chute.exceptions import StreamAborted
from chute.problems import problem
from chute.responses.sending import Outcome, Sender, supervise
from chute.sources.iterables import aclose_quietly

DEFAULT_HEARTBEAT = 15.0
DEFAULT_RETRY_MS = 3000
SHUTDOWN_RETRY_MS = 1000

_open_feeds: set[EventStream] = set()


def close_feeds() -> int:
    """End every open feed of this process now (a comment and a retry hint, then a clean end); how many.

    Call it on the event loop, when the server begins to stop."""
    feeds = list(_open_feeds)
    for feed in feeds:
        feed.close()
    return len(feeds)


class StreamLimit:
    """At most ``limit`` feeds at once in this process; the rest get 503 with ``Retry-After``."""

    def __init__(self, limit: int, *, retry_after: int = 5) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


def as_event(item: Event | Message | str) -> Event:
    """Broker messages and plain strings become events; events pass."""
    if isinstance(item, Event):
        return item
    if isinstance(item, Message):
        return Event(data=item.data, event=item.event, id=item.id)
    return Event(data=item)


class EventStream(Response):
    """Stream ``source`` (an async iterable of :class:`~chute.encoders.sse.Event`, broker messages or strings) as
    ``text/event-stream``, with a heartbeat comment after ``heartbeat`` idle seconds and a ``retry`` hint first."""

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterable[Event | Message | str],
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
        retry: int | None = DEFAULT_RETRY_MS,
        send_timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        limit: StreamLimit | None = None,
        shutdown_retry: int = SHUTDOWN_RETRY_MS,
    ) -> None:
        self.source = source
        self.heartbeat = heartbeat
        self.retry = retry
        self.send_timeout = send_timeout
        self.limit = limit
        self.shutdown_retry = shutdown_retry
        self._closing = False
        self._live: anyio.CancelScope | None = None  # cancelled by close(): the feed ends, not the connection
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.outcome: Outcome = "pending"
        self.events_sent = 0
        self._error: Exception | None = None

    def close(self) -> None:
        """End this feed soon with a retry hint (the server is stopping); a no-op once it ended."""
        self._closing = True
        if self._live is not None:
            self._live.cancel()

    def _start(self) -> dict[str, Any]:
        headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-type", b"content-length")]
        headers += [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx and friends would otherwise hold events back
        ]
        return {"type": "http.response.start", "status": 200, "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limit is not None and not self.limit.try_acquire():
            self.outcome = "refused"
            await aclose_quietly(self.source)  # type: ignore[arg-type]
            response = problem(503, "Service Unavailable", "too many live feeds; retry later")
            response.headers["retry-after"] = str(self.limit.retry_after)
            await response(scope, receive, send)
            return
        _open_feeds.add(self)
        try:
            send_items, receive_items = anyio.create_memory_object_stream[Event | Message | str](0)
            sender = Sender(send, self._start(), self.send_timeout)
            await supervise(
                self,
                receive,
                functools.partial(self._pump, sender, receive_items),
                position=lambda: self.events_sent,
                unit="events",
                helpers=[functools.partial(self._produce, send_items)],
            )
        finally:
            _open_feeds.discard(self)
            if self.limit is not None:
                self.limit.release()

    async def _produce(self, items: ObjectSendStream[Event | Message | str]) -> None:
        async with items:
            try:
                async for item in self.source:
                    await items.send(item)
            except Exception as exc:  # reported by the pump, which aborts the connection
                self._error = exc
            finally:
                await aclose_quietly(self.source)  # type: ignore[arg-type]

    async def _pump(self, sender: Sender, items: ObjectReceiveStream[Event | Message | str]) -> None:
        await sender.body(Event(retry=self.retry).encode() if self.retry is not None else b"", more=True)
        live = self._live = anyio.CancelScope()
        if self._closing:
            live.cancel()
        async with items:
            with live:
                await self._follow(sender, items)
        if live.cancelled_caught:
            await sender.body(comment("the server is stopping") + Event(retry=self.shutdown_retry).encode(), more=True)
        elif self._error is not None:
            raise StreamAborted(f"the feed failed: {self._error}", index=self.events_sent) from self._error
        await sender.body(b"", more=False)
        self.outcome = "complete"

    async def _follow(self, sender: Sender, items: ObjectReceiveStream[Event | Message | str]) -> None:
        while True:
            item: Event | Message | str | None = None
            with anyio.move_on_after(self.heartbeat if self.heartbeat > 0 else math.inf):
                try:
                    item = await items.receive()
                except anyio.EndOfStream:
                    break
            if item is None:
                await sender.body(comment(), more=True)
                continue
            await sender.body(as_event(item).encode(), more=True)
            self.events_sent += 1
