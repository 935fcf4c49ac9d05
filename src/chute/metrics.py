"""Prometheus metrics of streams: what is open, what was sent, how fast it started, how it ended.

:class:`StreamMetrics` is a pure ASGI middleware that watches the messages of every HTTP request, so it measures
any response (chute's or not) without the responses knowing about it:

- ``chute_streams_active{kind}``: responses in progress, by kind (``records``, ``file``, ``events``, ``proxy``,
  ``other``), the kind read from the matched route's ``response_class``.
- ``chute_response_bytes_total{kind,route}``: body bytes handed to the server, counted per chunk (so a long
  download or feed shows progress while it runs, not only when it ends); zero-copy sends count their ``count``.
- ``chute_time_to_first_byte_seconds{kind}``: request start to the first body bytes (or the end of a bodiless
  answer), and ``chute_response_duration_seconds{kind}``: request start to the end.
- ``chute_responses_total{kind,route,status,outcome}``: ``complete`` (the final body message was sent),
  ``send timeout`` (:class:`~chute.exceptions.SendTimeout`), ``client left`` (the server reported a disconnect,
  or refused a send, before the end), ``error`` (anything else: an exception, or a response that ended without
  its final message).

:func:`count_subscriber` wraps an SSE source and keeps ``chute_sse_subscribers{topic}`` while it is iterated.

Label cardinality is bounded: ``route`` is the route template (``/exports/{name}``, never the raw path; requests
no route matched are ``<unmatched>``), ``topic`` takes the first :data:`MAX_TOPICS` topics a process sees and
``<other>`` for the rest, and ``status`` is the status code (or ``none`` when no answer started).

Several processes (``chute serve --workers N``): prometheus-client's multiprocess mode. When
``PROMETHEUS_MULTIPROC_DIR`` names a folder (``chute serve`` sets one up before the workers start; it must be set
before prometheus-client is imported), every process writes its values to files there and :func:`exposition`
adds them up, so any worker's ``/metrics`` covers all of them. Gauges sum the live processes: each worker
removes its gauge files when it stops (:func:`release_process`); a worker that is killed outright leaves its last
gauge values behind until the folder is wiped (the next ``chute serve`` starts a fresh one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chute.exceptions import SendTimeout
from chute.feeds import EXTENSION as FEED_EXTENSION

__all__ = [
    "CONTENT_TYPE",
    "MAX_TOPICS",
    "MULTIPROC_DIR",
    "StreamMetrics",
    "count_subscriber",
    "exposition",
    "kind_of",
    "multiprocess_folder",
    "release_process",
]

T = TypeVar("T")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The variable that switches prometheus-client to multiprocess mode (read when it is imported)."""
CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of :func:`exposition`'s text."""
MAX_TOPICS = 100
"""Distinct ``topic`` label values per process; further topics are counted as ``<other>``."""
UNMATCHED = "<unmatched>"
OTHER_TOPIC = "<other>"

# Streams last from milliseconds (a small export) to hours (a live feed); first bytes should come in milliseconds.
_TTFB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

ACTIVE = Gauge("chute_streams_active", "Responses in progress, by kind.", ["kind"], multiprocess_mode="livesum")
BYTES = Counter("chute_response_bytes", "Body bytes handed to the server.", ["kind", "route"])
RESPONSES = Counter("chute_responses", "Finished responses, by how they ended.", ["kind", "route", "status", "outcome"])
FIRST_BYTE = Histogram(
    "chute_time_to_first_byte_seconds", "Request start to the first body bytes.", ["kind"], buckets=_TTFB_BUCKETS
)
DURATION = Histogram(
    "chute_response_duration_seconds", "Request start to the response's end.", ["kind"], buckets=_DURATION_BUCKETS
)
SUBSCRIBERS = Gauge(
    "chute_sse_subscribers", "Open Server-Sent Events subscriptions, by topic.", ["topic"], multiprocess_mode="livesum"
)

_topics: set[str] = set()
_topics_lock = threading.Lock()


def kind_of(response_class: object) -> str:
    """The ``kind`` label of a route's response class: records, file, events, proxy or other (also for anything
    that is not a class, such as FastAPI's placeholder for a route that names none)."""
    # Imported here: the responses need not load with the metrics, and chute.responses never imports this module.
    from chute.responses import EventStream, ProxyStream, RecordStream
    from chute.responses.bytestream import ByteStream
    from chute.responses.files import FileStream

    kinds: tuple[tuple[type, str], ...] = (
        (RecordStream, "records"),
        (ByteStream, "records"),  # a database's own CSV export
        (FileStream, "file"),
        (EventStream, "events"),
        (ProxyStream, "proxy"),
    )
    if isinstance(response_class, type):
        for cls, kind in kinds:
            if issubclass(response_class, cls):
                return kind
    return "other"


class StreamMetrics:
    """Measure every HTTP request of ``app``: active streams, bytes, first byte, duration and outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The router fills the scope in as it matches; until then the kind is unknown.
        kind = "other"
        route = UNMATCHED
        status = "none"
        first_byte = False
        completed = False
        disconnected = False
        active = ACTIVE.labels("other")
        active.inc()
        bytes_sent = None
        declared = 0  # Content-Length, for the one message that carries no bytes of its own

        def identify() -> None:
            nonlocal kind, route, active, bytes_sent
            matched = scope.get("route")
            if matched is not None:
                route = str(getattr(matched, "path", UNMATCHED))
                kind = kind_of(getattr(matched, "response_class", None))
                if kind != "other":  # move this request to its kind
                    active.dec()
                    active = ACTIVE.labels(kind)
                    active.inc()
            bytes_sent = BYTES.labels(kind, route)

        async def watching_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, first_byte, completed, disconnected, declared
            kind_of_message = message["type"]
            if kind_of_message == "http.response.start":
                status = str(message["status"])
                identify()
                length = next((v for k, v in message.get("headers", ()) if k.lower() == b"content-length"), b"")
                declared = int(length) if length.isdigit() else 0
            elif kind_of_message == FEED_EXTENSION:
                await detach(message)
                return
            elif kind_of_message in ("http.response.body", "http.response.zerocopysend", "http.response.pathsend"):
                if bytes_sent is None:
                    identify()
                assert bytes_sent is not None
                pathsend = kind_of_message == "http.response.pathsend"
                # A path sent by the server itself (granian) is the whole file: its size is the declared length.
                size = declared if pathsend else len(message.get("body", b"")) + int(message.get("count", 0))
                final = pathsend or not message.get("more_body", False)
                if not first_byte and (size or final):
                    first_byte = True
                    FIRST_BYTE.labels(kind).observe(time.perf_counter() - started)
                try:
                    await send(message)
                except OSError:  # servers of ASGI 2.4 raise on a send after the client left
                    disconnected = True
                    raise
                if size:
                    bytes_sent.inc(size)
                if final:
                    completed = True
                return
            await send(message)

        detached = False

        def finish(outcome: str) -> None:
            active.dec()
            DURATION.labels(kind).observe(time.perf_counter() - started)
            RESPONSES.labels(kind, route, status, outcome).inc()

        async def detach(message: Message) -> None:
            # A feed handed over to the server's hub (chute.feeds) ends when its connection does: it is counted
            # then, with the bytes the hub wrote, and not when the app returns.
            nonlocal detached
            if bytes_sent is None:
                identify()
            counter = bytes_sent
            assert counter is not None

            def detached_end(outcome: str, sent: int) -> None:
                if sent:
                    counter.inc(sent)
                finish(outcome)

            message["on_close"].append(detached_end)
            await send(message)
            detached = bool(message.get("accepted"))

        failure: BaseException | None = None
        try:
            await self.app(scope, watching_receive, watching_send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if bytes_sent is None:
                identify()
            if completed:
                outcome = "complete"
            elif isinstance(failure, SendTimeout):
                outcome = "send timeout"
            elif disconnected:
                outcome = "client left"
            else:
                outcome = "error"
            if not detached:
                finish(outcome)


def topic_label(topic: str) -> str:
    """The ``topic`` label of ``topic``: itself among the first :data:`MAX_TOPICS` a process sees, else other."""
    with _topics_lock:
        if topic in _topics:
            return topic
        if len(_topics) < MAX_TOPICS:
            _topics.add(topic)
            return topic
    return OTHER_TOPIC


async def count_subscriber(topic: str, source: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """``source`` (a subscription to ``topic``), counted in ``chute_sse_subscribers`` while it is iterated.

    Counting starts at the first iteration, so a feed refused before its body (503 past the cap) is never
    counted; closing this generator closes ``source``.
    """
    gauge = SUBSCRIBERS.labels(topic_label(topic))
    gauge.inc()
    try:
        async with aclosing(source):
            async for item in source:
                yield item
    finally:
        gauge.dec()


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_DIR):
        # A fresh registry per scrape, as prometheus-client prescribes: the collector reads every process's files.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> bytes:
    """The metrics in Prometheus' text format (of every process in multiprocess mode); blocking file reads."""
    return generate_latest(_registry())


def release_process(pid: int | None = None) -> None:
    """In multiprocess mode, drop the live gauges of ``pid`` (default: this process), which is stopping."""
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def multiprocess_folder() -> Iterator[str]:
    """Put the server processes started inside this block in multiprocess mode; yields the folder.

    A ``PROMETHEUS_MULTIPROC_DIR`` already set is used as it is (wiping it between runs is then its owner's
    job); otherwise a fresh temporary folder is made, named in the environment the workers inherit, and
    removed afterwards. The variable must be set before the worker processes import prometheus-client.
    """
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        yield given
        return
    folder = tempfile.mkdtemp(prefix="chute-metrics-")
    os.environ[MULTIPROC_DIR] = folder
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_DIR, None)
        shutil.rmtree(folder, ignore_errors=True)
