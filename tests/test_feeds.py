"""Detached live feeds (chute.feeds): caught-up EventStreams handed over to the hub of chute's uvicorn protocol.

Every test runs a real uvicorn with chute's protocol in a thread and talks to it over raw sockets; the app's
``/state`` route reports the hub as the server's event loop sees it, so a test knows the feeds were detached.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from chute import EventStream, StreamLimit, feeds, protocol
from chute.brokers import MemoryBroker
from chute.brokers.base import Message
from chute.client import EventStreamParser, ReceivedEvent
from chute.exceptions import BrokerError
from chute.metrics import StreamMetrics
from chute.service.logfeed import ACCESS_LOGGER, AccessLog
from tests.conftest import ServeApp, free_port
from tests.test_protocol import server_side_open

TOPIC = "news"


class FailingBroker(MemoryBroker):
    """A memory broker whose subscriptions fail (as a lost Redis would) at an event whose data is ``boom``."""

    async def subscribe(self, topic: str, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        async with contextlib.aclosing(super().subscribe(topic, last_event_id)) as messages:
            async for message in messages:
                if message.data == "boom":
                    raise BrokerError("the store went away")
                yield message


def feed_app(
    *,
    heartbeat: float = 15.0,
    send_timeout: float = 5.0,
    limit: StreamLimit | None = None,
    broker: MemoryBroker | None = None,
) -> Starlette:
    broker = broker or MemoryBroker()

    async def events(request: Request) -> Response:
        last_event_id = request.headers.get("last-event-id")
        return EventStream(
            broker.subscribe(TOPIC, last_event_id),
            heartbeat=heartbeat,
            send_timeout=send_timeout,
            limit=limit,
            live=feeds.LiveTopic(broker, TOPIC, last_event_id),
        )

    async def publish(request: Request) -> Response:
        """``count`` events of ``size`` bytes (data ``<n>``, padded), yielding to the loop between them."""
        count = int(request.query_params.get("count", "1"))
        size = int(request.query_params.get("size", "0"))
        data = request.query_params.get("data")
        ids = []
        for n in range(count):
            ids.append(await broker.publish(TOPIC, data or str(n).ljust(size, "x")))
            await asyncio.sleep(0)
        return JSONResponse(ids)

    async def state(request: Request) -> Response:
        hub = feeds.hub()
        buffered = sum(s.transport.get_write_buffer_size() for s in hub.subscribers)
        return JSONResponse({"subscribers": len(hub.subscribers), "topics": len(hub.topics), "buffered": buffered})

    routes = [Route("/events", events), Route("/publish", publish, methods=["POST"]), Route("/state", state)]
    return Starlette(routes=routes, middleware=[])


def hub_state(base: str, *, buffered: bool = False) -> dict[str, int]:
    """The hub's subscribers and topics (and with ``buffered``, the bytes in their write buffers)."""
    result: dict[str, int] = httpx.get(f"{base}/state").json()
    if not buffered:
        del result["buffered"]
    return result


def wait_for(condition: Callable[[], object], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Client:
    """A raw HTTP/1.1 subscriber: the response head, then events parsed as they arrive."""

    def __init__(self, base: str, last_event_id: str | None = None, *, rcvbuf: int | None = None) -> None:
        port = urlsplit(base).port
        assert port is not None
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        head = "GET /events HTTP/1.1\r\nHost: test\r\n"
        if last_event_id is not None:
            head += f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.comments: list[str] = []
        self.parser = EventStreamParser(on_comment=self.comments.append)
        self.events: list[ReceivedEvent] = []
        self.raw = b""
        self.body = b""

    def read_head(self) -> str:
        while b"\r\n\r\n" not in self.raw:
            self.raw += self._recv()
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        return head.decode()

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError
        return data

    def read_until(self, condition: Callable[[], object], within: float = 5.0) -> None:
        """Read chunked body bytes until ``condition()``; the chunks are de-framed into :attr:`body`."""
        self.sock.settimeout(within)
        while not condition():
            self.raw += self._recv()
            self._dechunk()

    def _dechunk(self) -> None:
        while b"\r\n" in self.raw:
            size_line, _, rest = self.raw.partition(b"\r\n")
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            chunk, self.raw = rest[:size], rest[size + 2 :]
            self.body += chunk
            self.events += self.parser.feed(chunk)
            if size == 0:
                self.body += b"<end>"
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def subscribe(base: str, clients: list[Client], last_event_id: str | None = None, **options: int) -> Client:
    client = Client(base, last_event_id, **options)
    clients.append(client)
    assert client.read_head().startswith("HTTP/1.1 200")
    return client


def test_one_event_reaches_every_detached_subscriber(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(), protocol.HttpToolsProtocol)
    many = [subscribe(base, clients) for _ in range(200)]
    wait_for(lambda: hub_state(base)["subscribers"] == 200, "200 detached feeds")
    ids = httpx.post(f"{base}/publish?count=3").json()
    for client in many:
        client.read_until(functools.partial(lambda c: len(c.events) >= 3, client))
        assert [event.id for event in client.events] == ids
        assert [event.data for event in client.events] == ["0", "1", "2"]
    assert hub_state(base) == {"subscribers": 200, "topics": 1}


def test_a_replaying_feed_is_handed_over_with_no_gap_and_no_duplicate(
    serve_app: ServeApp, clients: list[Client]
) -> None:
    base = serve_app(feed_app(), protocol.HttpToolsProtocol)
    first = subscribe(base, clients)  # keeps the topic's follower (and its ring) alive from the start
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the first feed detached")
    ids: list[str] = []
    burst = threading.Thread(target=lambda: ids.extend(httpx.post(f"{base}/publish?count=2000", timeout=30).json()))
    burst.start()
    # Clients join during the burst, each resuming after the newest event the first one has seen: they replay on
    # the ASGI path while events keep coming, then are handed over.
    late: list[tuple[str, Client]] = []
    while burst.is_alive() and len(late) < 20:
        first.read_until(lambda: len(first.events) > len(late) * 50)
        position = first.events[-1].id
        assert position is not None
        late.append((position, subscribe(base, clients, position)))
    burst.join()
    assert len(ids) == 2000
    assert late, "the burst ended before any client joined"
    for position, client in late:
        client.read_until(functools.partial(lambda c: c.events and c.events[-1].id == ids[-1], client))
        received = [event.id for event in client.events]
        assert received == ids[ids.index(position) + 1 :]
    first.read_until(lambda: first.events[-1].id == ids[-1])
    assert [event.id for event in first.events] == ids
    assert hub_state(base)["subscribers"] == 1 + len(late)


def test_an_idle_detached_feed_gets_heartbeats(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(heartbeat=0.2), protocol.HttpToolsProtocol)
    client = subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the feed detached")
    client.read_until(lambda: len(client.comments) >= 3)
    assert client.events == []  # comments only: nothing was published


def test_a_stalled_detached_client_is_reset_and_its_socket_released(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(send_timeout=0.5), protocol.HttpToolsProtocol)
    server_port = urlsplit(base).port
    assert server_port is not None
    stalled = subscribe(base, clients, rcvbuf=4096)
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the feed detached")
    # Until the kernel's buffers are full and the transport holds more than its high-water mark, yet less than
    # the hub's hard cap: then the send deadline, not the cap, must cut it.
    rounds = 0
    while hub_state(base, buffered=True)["buffered"] <= feeds.HIGH_WATER:
        rounds += 1
        assert rounds < 200, "the server's buffers never filled"
        httpx.post(f"{base}/publish?count=4&size=16000")
    assert hub_state(base, buffered=True)["buffered"] < feeds.MAX_BUFFER
    wait_for(lambda: hub_state(base)["subscribers"] == 0, "the stalled feed cut", within=10)
    wait_for(lambda: not server_side_open(server_port, stalled.port), "the server's socket released", within=5)
    with pytest.raises(ConnectionResetError):
        stalled.read_until(lambda: False)


def test_a_failing_follower_aborts_its_feeds_without_a_clean_end(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(broker=FailingBroker()), protocol.HttpToolsProtocol)
    client = subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the feed detached")
    httpx.post(f"{base}/publish?count=2")
    client.read_until(lambda: len(client.events) == 2)
    httpx.post(f"{base}/publish?data=boom")
    with pytest.raises((EOFError, ConnectionResetError)):
        client.read_until(lambda: False)
    assert not client.body.endswith(b"<end>")  # truncated, never complete-looking: the client reconnects
    assert hub_state(base) == {"subscribers": 0, "topics": 0}


def test_a_compressed_feed_stays_on_the_asgi_path(serve_app: ServeApp, clients: list[Client]) -> None:
    app = feed_app()

    def labelled(inner: ASGIApp) -> ASGIApp:
        """Marks the response as encoded, as a compressing middleware would: the hub must not write into it."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            async def sending(message: ASGIMessage) -> None:
                if message["type"] == "http.response.start" and scope["path"] == "/events":
                    message = {**message, "headers": [*message["headers"], (b"content-encoding", b"identity")]}
                await send(message)

            await inner(scope, receive, sending)

        return middleware

    base = serve_app(labelled(app), protocol.HttpToolsProtocol)
    client = subscribe(base, clients)
    httpx.post(f"{base}/publish?count=2")
    client.read_until(lambda: len(client.events) == 2)
    assert hub_state(base) == {"subscribers": 0, "topics": 0}  # refused once, the feed stopped asking


def test_a_client_that_leaves_is_removed_and_the_follower_stops(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(), protocol.HttpToolsProtocol)

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("chute_sse_subscribers", {"topic": TOPIC})

    before = gauge() or 0.0
    leaving = subscribe(base, clients)
    wait_for(lambda: hub_state(base) == {"subscribers": 1, "topics": 1}, "the feed detached")
    assert gauge() == before + 1
    leaving.close()
    wait_for(lambda: hub_state(base) == {"subscribers": 0, "topics": 0}, "the feed and its follower gone")
    assert gauge() == before


def test_the_cap_counts_detached_feeds_until_they_end(serve_app: ServeApp, clients: list[Client]) -> None:
    base = serve_app(feed_app(limit=StreamLimit(2)), protocol.HttpToolsProtocol)
    first = subscribe(base, clients)
    subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 2, "two detached feeds")
    refused = httpx.get(f"{base}/events")
    assert refused.status_code == 503
    first.close()
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the first feed gone")
    subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 2, "a new feed detached")


def test_shutdown_ends_detached_feeds_with_a_retry_hint(clients: list[Client]) -> None:
    port = free_port()
    config = uvicorn.Config(
        feed_app(), host="127.0.0.1", port=port, loop="uvloop", http=protocol.HttpToolsProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "uvicorn started")
    base = f"http://127.0.0.1:{port}"
    client = subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the feed detached")
    server.should_exit = True
    client.read_until(lambda: client.body.endswith(b"<end>"))
    assert client.comments[-1] == "the server is stopping"
    assert b"retry: 1000\n\n" in client.body
    thread.join(10)
    assert not thread.is_alive()


def logged_requests(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """The access-log documents of ``/events`` among ``records``."""
    found = [getattr(record, "request", None) for record in records]
    return [request for request in found if isinstance(request, dict) and request["path"] == "/events"]


def test_access_log_and_metrics_see_the_end_of_a_detached_feed(
    serve_app: ServeApp, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    app = feed_app()
    app.add_middleware(AccessLog)
    app.add_middleware(StreamMetrics)
    base = serve_app(app, protocol.HttpToolsProtocol)
    labels = {"kind": "other", "route": "/events", "status": "200", "outcome": "client left"}

    def ended() -> float:
        return REGISTRY.get_sample_value("chute_responses_total", labels) or 0.0

    def active() -> float:
        return REGISTRY.get_sample_value("chute_streams_active", {"kind": "other"}) or 0.0

    before, active_before = ended(), active()
    client = subscribe(base, clients)
    wait_for(lambda: hub_state(base)["subscribers"] == 1, "the feed detached")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        httpx.post(f"{base}/publish?count=2")
        client.read_until(lambda: len(client.events) == 2)
        assert logged_requests(caplog.records) == []  # the feed is still open: not logged, not counted
        assert ended() == before
        assert active() == active_before + 1
        client.close()
        wait_for(lambda: hub_state(base)["subscribers"] == 0, "the feed gone")
        wait_for(lambda: logged_requests(caplog.records) != [], "the access log line")
    logged = logged_requests(caplog.records)
    assert len(logged) == 1
    assert logged[0]["status"] == 200
    assert logged[0]["outcome"] == "complete"
    assert logged[0]["bytes"] == len(client.body)
    assert ended() == before + 1
    assert active() == active_before
