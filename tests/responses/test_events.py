"""EventStream on a real uvicorn: the subscription is released when the client leaves, the cap answers 503, a
failing feed aborts the connection, and the retry hint comes first."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from fastapi import FastAPI

from chute import EventStream, StreamLimit
from chute.encoders.sse import Event
from tests.conftest import ServeApp
from tests.sse import read_events


def test_leaving_releases_the_subscription(serve_app: ServeApp) -> None:
    released = threading.Event()

    async def feed() -> AsyncIterator[Event]:
        try:
            yield Event(data="first")
            await anyio.sleep(3600)  # an idle feed: the client leaves while the source waits
        finally:
            released.set()

    app = FastAPI()

    @app.get("/feed")
    async def endpoint() -> EventStream:
        return EventStream(feed(), heartbeat=0.2)

    assert [e.data for e in read_events(f"{serve_app(app)}/feed", 1)] == ["first"]
    assert released.wait(1.0)


def test_the_cap_answers_503_with_retry_after(serve_app: ServeApp) -> None:
    limit = StreamLimit(1, retry_after=7)

    async def forever() -> AsyncIterator[str]:
        while True:
            yield "tick"
            await anyio.sleep(0.05)

    app = FastAPI()

    @app.get("/feed")
    async def endpoint() -> EventStream:
        return EventStream(forever(), limit=limit)

    base_url = serve_app(app)
    with httpx.stream("GET", f"{base_url}/feed") as first:
        lines = first.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == "retry: 3000"
        second = httpx.get(f"{base_url}/feed")
        assert second.status_code == 503
        assert second.headers["retry-after"] == "7"
    assert [e.data for e in read_events(f"{base_url}/feed", 1)] == ["tick"]  # the slot came back


def test_a_failing_feed_aborts_the_connection_and_the_retry_hint_comes_first(serve_app: ServeApp) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "one"
        raise RuntimeError("the broker went away")

    app = FastAPI()

    @app.get("/feed")
    async def endpoint() -> EventStream:
        return EventStream(broken(), retry=1234)

    received = bytearray()

    def read_all() -> None:
        with httpx.stream("GET", f"{serve_app(app)}/feed") as response:
            for chunk in response.iter_raw():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert bytes(received) == b"retry: 1234\n\ndata: one\n\n"
