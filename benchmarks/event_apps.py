"""The live-feed anchors: Server-Sent Events with an in-process fan-out, written the way their documentation shows.

Both apps answer ``GET /events/{topic}`` (subscribe: ``text/event-stream``, live only, no replay) and
``POST /events/{topic}`` (publish the request body as one event; answers ``{"id": ...}``, like chute's service),
and ``GET /healthz``. The fan-out is the idiomatic recipe of both projects' examples: each subscriber registers
an :class:`asyncio.Queue` in a set for its topic, publishing puts the event into every queue, and the
subscriber's generator takes events off its queue and yields them.

- ``sse-starlette``: sse-starlette's ``EventSourceResponse`` over that generator (its defaults: a ping every 15 s,
  ``\\r\\n`` line ends);
- ``fastapi``: FastAPI's native SSE, a path operation that is an async generator of ``ServerSentEvent`` with
  ``response_class=EventSourceResponse`` (a keep-alive comment after 15 idle seconds);
- ``floor``: not a usable server but a yardstick, the least an ASGI app on uvicorn can do per subscriber: a bare
  ASGI callable (no framework), one :class:`asyncio.Event` per topic that each publish sets and replaces, one
  ``send`` per subscriber and event; no heartbeat, no send deadline, and it never notices a client that left;

chute itself runs as ``chute serve`` (its reference service), not from here. Run one as
``python -m benchmarks.event_apps CONTENDER PORT``: uvicorn with uvloop and httptools, one worker, loopback, as
``chute serve`` runs it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from fastapi.sse import ServerSentEvent
from sse_starlette import EventSourceResponse

from benchmarks.apps import bare_app, run_uvicorn


@dataclasses.dataclass(frozen=True)
class Published:
    id: str
    data: str


class Hub:
    """Topics of subscriber queues; ``publish`` puts an event into each queue of its topic."""

    def __init__(self) -> None:
        self.topics: dict[str, set[asyncio.Queue[Published]]] = collections.defaultdict(set)
        self.last: dict[str, int] = collections.defaultdict(int)

    def publish(self, topic: str, data: str) -> str:
        self.last[topic] += 1
        event = Published(str(self.last[topic]), data)
        for queue in self.topics[topic]:
            queue.put_nowait(event)
        return event.id

    async def subscribe(self, topic: str) -> AsyncIterator[Published]:
        queue: asyncio.Queue[Published] = asyncio.Queue()
        self.topics[topic].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.topics[topic].discard(queue)


def _publish_route(app: FastAPI, hub: Hub) -> None:
    @app.post("/events/{topic}")
    async def publish(request: Request, topic: str) -> dict[str, str]:
        body = await request.body()
        return {"id": hub.publish(topic, body.decode())}


def sse_starlette_app() -> FastAPI:
    """sse-starlette's ``EventSourceResponse`` over an async generator of event dicts."""
    app = bare_app()
    hub = Hub()
    _publish_route(app, hub)

    @app.get("/events/{topic}")
    async def events(topic: str) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, str]]:
            async for event in hub.subscribe(topic):
                yield {"id": event.id, "data": event.data}

        return EventSourceResponse(stream())

    return app


def fastapi_app() -> FastAPI:
    """FastAPI's native SSE: the path operation is an async generator of ``ServerSentEvent``; ``raw_data`` sends
    the text as is (``data`` would JSON-encode it)."""
    app = bare_app()
    hub = Hub()
    _publish_route(app, hub)

    @app.get("/events/{topic}", response_class=FastAPIEventSourceResponse)
    async def events(topic: str) -> AsyncIterator[ServerSentEvent]:
        async for event in hub.subscribe(topic):
            yield ServerSentEvent(raw_data=event.data, id=event.id)

    return app


class Broadcast:
    """One topic's latest event as a ready frame, and an :class:`asyncio.Event` that each publish sets and replaces:
    the cheapest fan-out there is (no queue, no copy per subscriber)."""

    def __init__(self) -> None:
        self.last = 0
        self.frame = b""
        self._changed: asyncio.Event | None = None

    @property
    def changed(self) -> asyncio.Event:
        if self._changed is None:  # created on the server's loop
            self._changed = asyncio.Event()
        return self._changed

    def publish(self, body: bytes) -> str:
        self.last += 1
        self.frame = b"id: %d\ndata: %s\n\n" % (self.last, body)
        changed, self._changed = self.changed, asyncio.Event()
        changed.set()
        return str(self.last)


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
RETRY = {"type": "http.response.body", "body": b"retry: 3000\n\n", "more_body": True}


class Floor:
    """The yardstick: a bare ASGI app whose subscribers wait on the broadcast and send what it carries."""

    def __init__(self) -> None:
        self.hub = Broadcast()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] == "GET" and scope["path"].startswith("/events/"):
            await send(START)
            await send(RETRY)
            while True:
                await self.hub.changed.wait()
                await send({"type": "http.response.body", "body": self.hub.frame, "more_body": True})
        answer = b"ok"
        if scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            answer = b'{"id":"%s"}' % self.hub.publish(body).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]}
        )
        await send({"type": "http.response.body", "body": answer})


APPS: dict[str, Callable[[], Any]] = {
    "sse-starlette": sse_starlette_app,
    "fastapi": fastapi_app,
    "floor": Floor,
}


def serve(contender: str, port: int) -> None:
    run_uvicorn(APPS[contender](), port)  # as `chute serve` runs: uvloop, httptools, listen backlog 2048


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in APPS:
        sys.exit(f"usage: python -m benchmarks.event_apps {{{','.join(APPS)}}} PORT")
    serve(sys.argv[1], int(sys.argv[2]))
