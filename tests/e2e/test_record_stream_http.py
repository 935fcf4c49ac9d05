"""RecordStream behind a real uvicorn: what a client on a socket sees when things go right and wrong."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp

from chute import RecordStream

ServeApp = Callable[[ASGIApp], str]


def failing_app(fail_after: int) -> FastAPI:
    app = FastAPI()

    @app.get("/records")
    async def records() -> RecordStream:
        async def source() -> AsyncIterator[dict[str, int]]:
            for i in range(fail_after):
                yield {"id": i}
            raise RuntimeError("the database went away")

        return RecordStream(source(), format="ndjson")

    return app


def test_an_error_mid_stream_aborts_the_connection(serve_app: ServeApp) -> None:
    base_url = serve_app(failing_app(fail_after=50_000))
    received = bytearray()

    def read_all() -> None:
        with httpx.stream("GET", f"{base_url}/records") as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    lines = received.decode().splitlines()
    # Every record before the failure was delivered, and nothing pretends to be more.
    assert [json.loads(line)["id"] for line in lines] == list(range(50_000))


def test_an_error_before_the_first_byte_is_a_500_problem(serve_app: ServeApp) -> None:
    base_url = serve_app(failing_app(fail_after=0))
    response = httpx.get(f"{base_url}/records")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "went away" not in response.text  # internals stay in the log


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_client_that_leaves_under_backpressure_closes_the_source(serve_app: ServeApp, kind: str) -> None:
    closed = threading.Event()
    produced = itertools.count()

    async def endless_async() -> AsyncIterator[dict[str, object]]:
        try:
            while True:
                yield {"id": next(produced), "pad": "x" * 100}
        finally:
            closed.set()

    def endless_sync() -> Iterator[dict[str, object]]:
        try:
            while True:
                yield {"id": next(produced), "pad": "x" * 100}
        finally:
            closed.set()

    app = FastAPI()

    @app.get("/endless")
    async def endless() -> RecordStream:
        return RecordStream(endless_async() if kind == "async" else endless_sync(), format="ndjson")

    base_url = serve_app(app)
    with httpx.stream("GET", f"{base_url}/endless") as response:
        next(response.iter_raw())
        time.sleep(0.5)  # stop reading: the server's send blocks and the producer waits for room
    left = time.monotonic()
    assert closed.wait(2.0)
    assert time.monotonic() - left < 1.0
    # Backpressure held the producer: it got at most a few batches ahead of the socket buffers.
    stalled_at = next(produced)
    time.sleep(0.2)
    assert next(produced) == stalled_at + 1


def test_a_slow_source_reaches_the_client_promptly(serve_app: ServeApp) -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> RecordStream:
        async def ticks() -> AsyncIterator[dict[str, int]]:
            for i in range(3):
                yield {"tick": i}
                await anyio.sleep(0.5)

        return RecordStream(ticks(), format="ndjson", max_latency=0.05)

    base_url = serve_app(app)
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream("GET", f"{base_url}/slow") as response:
        for line in response.iter_lines():
            if line:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    # Each record arrives long before the next one is produced: nothing waits for a full 64 KiB chunk.
    assert arrivals[0] < 0.4
    assert arrivals[1] - arrivals[0] < 0.8


def test_the_end_record_lets_a_client_check_completeness(serve_app: ServeApp) -> None:
    app = FastAPI()

    @app.get("/complete")
    async def complete() -> RecordStream:
        return RecordStream(({"id": i} for i in range(10_000)), format="json", end_record=True)

    items = httpx.get(f"{serve_app(app)}/complete").json()
    assert items[-1] == {"@end": {"records": 10_000}}
    assert len(items) == 10_001
