"""``EventStream``: a live feed of Server-Sent Events as an ASGI response.

Theory of operation. The request's task iterates the source and sends each event as its own send (a feed is
about latency: nothing is buffered or compressed). The only other task is the one
:func:`~chute.responses.sending.supervise` runs to notice the client leaving; it also keeps the heartbeat: its
wait for ``http.disconnect`` gives up after ``heartbeat`` seconds, and a comment goes out when no event did in the
meantime (so proxies and clients see a live connection only when it is idle). Two tasks per feed and no queue,
stream or timer per event: with ten thousand subscribers, every object a feed holds and every step an event takes
is paid ten thousand times (memory, and the time until the last subscriber has the event). The source is never
cancelled to make room for a heartbeat, since cancelling an async generator mid-``await`` ends it. When the
client leaves, the source is closed with ``aclose()``, releasing its subscription; a client that stops reading
is cut after ``send_timeout``. A :class:`StreamLimit` caps concurrent feeds: past it, 503 with ``Retry-After``.

A feed never ends by itself, so a server that waits for open responses before it stops would wait forever.
Every open feed of the process is registered; :func:`close_feeds` (called by :mod:`chute.protocol` when uvicorn
begins to shut down) makes each one send a comment and a short ``retry:`` hint and end cleanly: clients
reconnect, with their ``Last-Event-ID``, to whichever server answers next.

Detached feeds. A feed that follows a broker topic (``live=``, a :class:`~chute.feeds.LiveTopic`) on a server
offering :data:`chute.feeds.EXTENSION` (chute's uvicorn protocol) leaves the ASGI path once it has caught up:
after its retry hint (no ``Last-Event-ID``) or after any event whose id the topic's hub still holds, it hands its
connection to the hub (:mod:`chute.feeds`) and its task returns. Replay, resets and everything before the
handover stay here; elsewhere (other servers, in-process test transports) the feed simply stays on this path.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Scope, Send

from chute import feeds
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
    open_feeds = list(_open_feeds)
    for feed in open_feeds:
        feed.close()
    return len(open_feeds) + feeds.close_all()


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
        live: feeds.LiveTopic | None = None,
    ) -> None:
        self.source = source
        self.live = live
        self.detached = False
        self._topic: feeds.Topic | None = None  # the hub's follower, when this feed may hand over to it
        self._last_id: str | None = None  # id of the last event sent
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
        self._sending = False
        self._sent_at = 0.0  # anyio.current_time() at the end of the last send

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
        sender = Sender(send, self._start(), self.send_timeout)
        self._sent_at = anyio.current_time()
        if self.live is not None and feeds.EXTENSION in scope.get("extensions", {}):
            self._topic = feeds.hub().interest(self.live.broker, self.live.topic)
        try:
            await supervise(
                self,
                functools.partial(self._receive, receive, sender),
                functools.partial(self._pump, sender, send),
                position=lambda: self.events_sent,
                unit="events",
            )
        finally:
            _open_feeds.discard(self)
            if self._topic is not None:
                self._topic.release_interest()
                self._topic = None
            await aclose_quietly(self.source)  # type: ignore[arg-type]
            if self.limit is not None and not self.detached:  # a detached feed releases it when it ends
                self.limit.release()

    async def _receive(self, receive: Receive, sender: Sender) -> ASGIMessage:
        """``receive`` for the disconnect watcher, which sends the heartbeat while it waits.

        A heartbeat goes out only when nothing was sent for ``heartbeat`` seconds and no send is under way: a send
        that waits (a slow client) already shows the connection is not idle. The pump may begin a send while a
        heartbeat is still draining; each send writes its whole chunk before it waits, so the two never interleave.
        """
        if self.heartbeat <= 0:
            return await receive()
        while True:
            # Due ``heartbeat`` seconds after the last send, whoever made it.
            with anyio.move_on_after(self._sent_at + self.heartbeat - anyio.current_time()):
                return await receive()
            if not sender.started or self._sending:
                self._sent_at = anyio.current_time()  # not idle: look again a heartbeat from now
            elif anyio.current_time() - self._sent_at >= self.heartbeat:
                await self._send(sender, comment())

    async def _send(self, sender: Sender, data: bytes) -> None:
        self._sending = True
        try:
            await sender.body(data, more=True)
        finally:
            self._sending = False
            self._sent_at = anyio.current_time()

    async def _detach(self, send: Send) -> bool:
        """Hand the connection over to the hub if it holds every event after the last one sent; whether it did."""
        topic = self._topic
        assert topic is not None
        assert self.live is not None
        if self._last_id is None and (self.events_sent or self.live.last_event_id is not None):
            return False  # a position the hub cannot place (events without ids, or a replay yet to come)
        if topic.backlog(self._last_id) is None:
            return False
        handover = feeds.Handover(topic, self._last_id, self.heartbeat, self.send_timeout, self.shutdown_retry)
        if self.limit is not None:
            limit = self.limit
            handover.on_close.append(lambda outcome, sent: limit.release())
        message = feeds.handover_message(handover)
        with anyio.fail_after(self.send_timeout):
            await send(message)
        self.detached = bool(message["accepted"])
        if not self.detached:  # the server cannot take this response (compressed, HEAD, closing): stop asking
            topic.release_interest()
            self._topic = None
        return self.detached

    async def _pump(self, sender: Sender, send: Send) -> None:
        await self._send(sender, Event(retry=self.retry).encode() if self.retry is not None else b"")
        if self._topic is not None and not self._closing and await self._detach(send):
            self.outcome = "complete"
            return
        live = self._live = anyio.CancelScope()
        if self._closing:
            live.cancel()
        error: Exception | None = None
        events = aiter(self.source)
        with live:
            while True:
                try:
                    item = await anext(events)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the source failed: the connection is aborted, never ended cleanly
                    error = exc
                    break
                event = as_event(item)
                await self._send(sender, event.encode())
                self.events_sent += 1
                self._last_id = event.id
                if self._topic is not None and await self._detach(send):
                    self.outcome = "complete"
                    return
        if live.cancelled_caught:
            await sender.body(comment("the server is stopping") + Event(retry=self.shutdown_retry).encode(), more=True)
        elif error is not None:
            raise StreamAborted(f"the feed failed: {error}", index=self.events_sent) from error
        await sender.body(b"", more=False)
        self.outcome = "complete"
