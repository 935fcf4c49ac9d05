"""Detached live feeds: one follower per topic writes each event to every caught-up subscriber's socket.

Why. An open :class:`~chute.responses.events.EventStream` on the ASGI path is a request task with the framework's
objects (FastAPI/Starlette, uvicorn's cycle, anyio's task group) plus a disconnect watcher, ~36 KiB, and each
event is one ``await send()`` per subscriber through every middleware. With ten thousand subscribers that is
hundreds of megabytes and most of a second per event. Once a feed has caught up with the live end of its topic,
what it still needs is small: its transport, a heartbeat, a send deadline and a clean end.

Theory of operation. chute's uvicorn protocol (:mod:`chute.protocol`) advertises :data:`EXTENSION`. An
``EventStream`` that follows a broker topic (:class:`LiveTopic`) registers its interest with the event loop's
:class:`Hub`, which starts ONE follower per topic (``broker.subscribe(topic)`` at the live end) keeping a ring of
the topic's last :data:`RING` events, already encoded. When the feed's last sent id is in that ring (or it has
sent nothing and asked for no history), it sends ``{"type": EXTENSION, "feed": Handover}``; the protocol hands
its transport to :meth:`Handover.attach`, which writes the ring's events after that id (none twice, none
missing: both sides run on the same event loop, and the handover does not await) and adds the subscriber to the
topic. The request's task then returns; the connection stays open with no task, scope or middleware behind it.

Each event is encoded once (with its HTTP/1.1 chunk framing) and written with ``transport.write`` to every
subscriber in one synchronous loop. One periodic task per hub sends heartbeat comments to subscribers idle for
their ``heartbeat`` and cuts those whose write buffer stayed above :data:`HIGH_WATER` for ``send_timeout``
(``SO_LINGER`` 0 and abort: the socket is released at once); a buffer past :data:`MAX_BUFFER` is cut at once, so
a stalled client never holds more. The protocol reports ``connection_lost`` (:meth:`Subscriber.lost`);
:func:`close_all` (server shutdown) ends every feed with a comment and a ``retry:`` hint. Whatever a middleware
must do when the response ends (count, log, release the :class:`~chute.responses.events.StreamLimit`) it appends
to the message's ``on_close`` list: each is called once, with the outcome and the bytes the hub wrote.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Callable
from typing import Any

from chute import zerocopy
from chute.brokers.base import Broker, Message
from chute.encoders.sse import Event, comment

logger = logging.getLogger("chute")

EXTENSION = "chute.response.feed"
"""chute's ASGI extension and message type: ``feed`` (a :class:`Handover`) and ``on_close`` (a list of
``callback(outcome, bytes)``); the server sets ``accepted`` to ``True`` when it took the connection over."""
RING = 256
"""Recent events a topic keeps, encoded: a feed whose last id is among them can be handed over."""
HIGH_WATER = 64 * 1024
"""Write-buffer bytes above which a subscriber counts as stalled (uvloop's default high-water mark)."""
MAX_BUFFER = 1 << 20
"""Write-buffer bytes past which a subscriber is cut at once: the memory one stalled client may pin."""
_END = b"0\r\n\r\n"

OnClose = Callable[[str, int], None]
"""Called once when a detached feed ends, with its outcome (``complete``, ``client left``, ``send timeout``,
``error``) and the body bytes the hub wrote."""


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclasses.dataclass(frozen=True)
class LiveTopic:
    """What makes a feed detachable: the broker and topic it follows, and the client's ``Last-Event-ID``."""

    broker: Broker
    topic: str
    last_event_id: str | None = None


class Subscriber:
    """One detached connection: its transport and what the hub needs to keep it healthy."""

    __slots__ = (
        "chunked",
        "ended",
        "heartbeat",
        "last_write",
        "on_close",
        "send_timeout",
        "sent",
        "shutdown_retry",
        "stalled_since",
        "topic",
        "transport",
    )

    def __init__(self, topic: Topic, transport: asyncio.WriteTransport, chunked: bool, handover: Handover) -> None:
        self.topic = topic
        self.transport = transport
        self.chunked = chunked
        self.heartbeat = handover.heartbeat
        self.send_timeout = handover.send_timeout
        self.shutdown_retry = handover.shutdown_retry
        self.on_close = handover.on_close
        self.last_write = topic.hub.loop.time()
        self.stalled_since: float | None = None
        self.sent = 0
        self.ended = False

    def write(self, data: bytes, now: float) -> None:
        self.transport.write(_chunk(data) if self.chunked else data)
        self.sent += len(data)
        self.last_write = now

    def lost(self) -> None:
        """The connection closed (the protocol's ``connection_lost``)."""
        self.end("client left")

    def cut(self, reason: str) -> None:
        """Reset the connection now (the send deadline): unsent bytes dropped, socket released at once."""
        logger.warning("%s: the detached feed of %s is cut", reason, self.topic.name)
        with contextlib.suppress(OSError):
            connection = self.transport.get_extra_info("socket")
            if connection is not None:
                zerocopy.reset_on_close(connection.fileno())
        self.transport.abort()
        self.end("send timeout")

    def finish(self, goodbye: bytes) -> None:
        """End the response cleanly after ``goodbye`` and close the connection."""
        if self.transport.get_write_buffer_size() > HIGH_WATER:  # a close would wait on a stalled reader
            self.cut("the client is not reading")
            return
        if goodbye:
            self.write(goodbye, self.topic.hub.loop.time())
        if self.chunked:
            self.transport.write(_END)
        self.transport.close()
        self.end("complete")

    def end(self, outcome: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.topic.remove(self)
        for callback in self.on_close:
            try:
                callback(outcome, self.sent)
            except Exception:  # one failing hook must not keep the others from running
                logger.exception("a detached feed's on_close hook failed")
        self.on_close = []


class Topic:
    """One topic's follower, its ring of recent encoded events and its detached subscribers."""

    def __init__(self, hub: Hub, broker: Broker, name: str) -> None:
        from chute.metrics import SUBSCRIBERS, topic_label  # chute.metrics imports this module

        self.hub = hub
        self.broker = broker
        self.name = name
        self.subscribers: set[Subscriber] = set()
        self.ring: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=RING)
        self.interested = 0  # ASGI feeds of the topic that may still hand over
        self.alive = True
        self.gauge = SUBSCRIBERS.labels(topic_label(name))
        self.task = hub.loop.create_task(self._follow(), name=f"chute-feed-{name}")

    def backlog(self, last_id: str | None) -> list[bytes] | None:
        """The encoded events after ``last_id`` (``None``: the live end); ``None`` when the ring does not reach."""
        if not self.alive:
            return None
        if last_id is None:
            return []
        for index in range(len(self.ring) - 1, -1, -1):  # a caught-up feed is at or near the right end
            if self.ring[index][0] == last_id:
                return [data for _, data in list(self.ring)[index + 1 :]]
        return None

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        self.hub.subscribers.add(subscriber)
        self.gauge.inc()

    def remove(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            self.hub.subscribers.discard(subscriber)
            self.gauge.dec()
        self.stop_if_unused()

    def release_interest(self) -> None:
        self.interested -= 1
        self.stop_if_unused()

    def stop_if_unused(self) -> None:
        if self.alive and not self.subscribers and self.interested <= 0:
            self.stop()

    def stop(self) -> None:
        self.alive = False
        if self.hub.topics.get((id(self.broker), self.name)) is self:
            del self.hub.topics[(id(self.broker), self.name)]
        self.task.cancel()

    def fan_out(self, message: Message) -> None:
        """Encode ``message`` once and write it to every subscriber, in one synchronous loop."""
        data = Event(data=message.data, event=message.event, id=message.id).encode()
        self.ring.append((message.id, data))
        chunk = _chunk(data)
        size = len(data)
        now = self.hub.loop.time()
        overfull = []
        for subscriber in self.subscribers:
            transport = subscriber.transport
            transport.write(chunk if subscriber.chunked else data)
            subscriber.sent += size
            subscriber.last_write = now
            if transport.get_write_buffer_size() > MAX_BUFFER:
                overfull.append(subscriber)
        for subscriber in overfull:
            subscriber.cut(f"the client left {MAX_BUFFER} bytes unread")

    async def _follow(self) -> None:
        source = self.broker.subscribe(self.name)
        outcome = "complete"
        try:
            async for message in source:
                self.fan_out(message)
        except Exception:  # the broker failed: abort, so that clients reconnect with Last-Event-ID
            logger.exception("the follower of topic %s failed", self.name)
            outcome = "error"
        finally:
            await source.aclose()
            self.alive = False
            if self.hub.topics.get((id(self.broker), self.name)) is self:
                del self.hub.topics[(id(self.broker), self.name)]
        for subscriber in list(self.subscribers):
            if outcome == "error":
                subscriber.transport.abort()  # no final chunk: the body must not look complete
                subscriber.end("error")
            else:
                subscriber.finish(b"")


@dataclasses.dataclass
class Handover:
    """What an ``EventStream`` hands to the server: the topic, its position and its settings."""

    topic: Topic
    last_id: str | None
    heartbeat: float
    send_timeout: float | None
    shutdown_retry: int
    on_close: list[OnClose] = dataclasses.field(default_factory=list)

    def attach(self, transport: asyncio.WriteTransport, *, chunked: bool) -> Subscriber | None:
        """Take the connection over (called by the server, synchronously): the events after ``last_id`` are
        written now, the rest as they come. ``None`` when the topic's ring no longer reaches ``last_id``."""
        backlog = self.topic.backlog(self.last_id)
        if backlog is None:
            return None
        subscriber = Subscriber(self.topic, transport, chunked, self)
        now = self.topic.hub.loop.time()
        for data in backlog:
            subscriber.write(data, now)
        self.topic.add(subscriber)
        self.topic.hub.watch(subscriber)
        return subscriber


class Hub:
    """The detached feeds of one event loop, and the periodic task that keeps them (heartbeat, send deadline)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.topics: dict[tuple[int, str], Topic] = {}
        self.subscribers: set[Subscriber] = set()
        self.interval = 1.0
        self._ticker: asyncio.Task[None] | None = None

    def interest(self, broker: Broker, name: str) -> Topic:
        """The topic's follower (started now if needed), kept while the caller may hand a feed over to it."""
        topic = self.topics.get((id(broker), name))
        if topic is None:
            topic = self.topics[(id(broker), name)] = Topic(self, broker, name)
        topic.interested += 1
        return topic

    def watch(self, subscriber: Subscriber) -> None:
        # Ticks often enough to keep the tightest heartbeat and send deadline to within a fraction of them.
        for period in (subscriber.heartbeat, subscriber.send_timeout):
            if period is not None and period > 0:
                self.interval = max(0.01, min(self.interval, period / 4))
        if self._ticker is None or self._ticker.done():
            self._ticker = self.loop.create_task(self._tick(), name="chute-feeds-tick")

    async def _tick(self) -> None:
        while self.subscribers:
            await asyncio.sleep(self.interval)
            now = self.loop.time()
            idle = comment()
            stalled = []
            for subscriber in self.subscribers:
                if subscriber.transport.get_write_buffer_size() > HIGH_WATER:
                    since = subscriber.stalled_since
                    if since is None:
                        subscriber.stalled_since = now
                    elif subscriber.send_timeout is not None and now - since >= subscriber.send_timeout:
                        stalled.append(subscriber)
                    continue  # a client with bytes waiting is not idle
                subscriber.stalled_since = None
                if subscriber.heartbeat > 0 and now - subscriber.last_write >= subscriber.heartbeat:
                    subscriber.write(idle, now)
            for subscriber in stalled:
                subscriber.cut(f"the client read nothing for {subscriber.send_timeout} s")

    def close_all(self) -> int:
        """End every detached feed with a comment and its retry hint, then close; how many."""
        subscribers = list(self.subscribers)
        for subscriber in subscribers:
            subscriber.finish(comment("the server is stopping") + Event(retry=subscriber.shutdown_retry).encode())
        return len(subscribers)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per server process; tests run several loops)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(loop)
    return found


def close_all() -> int:
    """:meth:`Hub.close_all` of the running loop's hub, if it has one; how many feeds ended."""
    with contextlib.suppress(RuntimeError):  # no running loop: nothing can be detached
        found = _hubs.get(asyncio.get_running_loop())
        if found is not None:
            return found.close_all()
    return 0


def handover_message(handover: Handover) -> dict[str, Any]:
    """The ASGI message that offers the connection to the server."""
    return {"type": EXTENSION, "feed": handover, "on_close": handover.on_close, "accepted": False}
