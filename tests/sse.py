"""Test helpers for event feeds: read N events of an infinite stream then disconnect, and a numbered feed that
ends every connection after a few events, for reconnecting clients."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chute import EventStream, StreamLimit
from chute.client import EventStreamParser, ReceivedEvent
from chute.encoders.sse import Event


def read_events(
    url: str,
    count: int,
    *,
    within: float = 5.0,
    headers: dict[str, str] | None = None,
    comments: list[str] | None = None,
) -> list[ReceivedEvent]:
    """The first ``count`` events of the feed at ``url`` (fewer if ``within`` seconds pass); comments seen are
    appended to ``comments``. The connection is closed when this returns, whatever the feed does next."""
    events: list[ReceivedEvent] = []
    deadline = time.monotonic() + within
    parser = EventStreamParser(on_comment=None if comments is None else comments.append)
    with httpx.stream("GET", url, headers=headers, timeout=within) as response:
        response.raise_for_status()
        try:
            for chunk in response.iter_bytes():
                events += parser.feed(chunk)
                if len(events) >= count or time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:
            pass  # nothing for `within` seconds: the deadline has passed
    return events[:count]


@dataclasses.dataclass
class Visit:
    """One request to a :class:`NumberedFeed`: its ``Last-Event-ID`` (decoded as UTF-8), its headers, when it
    arrived and when its response ended (``time.monotonic()``; ``None`` while it runs)."""

    last_event_id: str | None
    headers: dict[str, str]
    started: float
    ended: float | None = None


class NumberedFeed:
    """Events ``1`` to ``total`` (ids ``"1"``..., data ``event <n>``) on ``/feed``: each connection starts with a
    ``retry`` hint (milliseconds), sends the next ``per_connection`` events after its ``Last-Event-ID`` and ends;
    once none is left, 204; past ``limit``, 503 + ``Retry-After``. :attr:`visits` records every request."""

    def __init__(
        self, total: int = 6, *, per_connection: int = 3, retry: int | None = 50, limit: StreamLimit | None = None
    ) -> None:
        self.total = total
        self.limit = limit
        self.per_connection = per_connection
        self.retry = retry
        self.visits: list[Visit] = []
        self.app = Starlette(routes=[Route("/feed", self.endpoint)])

    async def endpoint(self, request: Request) -> Response:
        raw = dict(request.scope["headers"]).get(b"last-event-id")
        visit = Visit(
            None if raw is None else raw.decode("utf-8"),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]},
            time.monotonic(),
        )
        self.visits.append(visit)
        after = int(visit.last_event_id or 0)
        if after >= self.total:
            visit.ended = time.monotonic()
            return Response(status_code=204)
        return EventStream(self.source(visit, after), retry=self.retry, limit=self.limit)

    async def source(self, visit: Visit, after: int) -> AsyncIterator[Event]:
        try:
            for n in range(after + 1, min(after + self.per_connection, self.total) + 1):
                yield Event(data=f"event {n}", id=str(n))
        finally:
            visit.ended = time.monotonic()
