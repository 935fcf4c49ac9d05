"""What every broker shares: the message, the id rules, and the reset that replaces silently lost events."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Protocol

from chute.exceptions import BadRequest

RESET = "reset"
"""Event type of the message a subscriber gets when its ``Last-Event-ID`` is older than the retained history:
the events in between are gone, and the client must know it rather than skip them unawares."""

MAX_ID_LENGTH = 64


@dataclasses.dataclass(frozen=True)
class Message:
    """One event of a topic: its opaque id (monotonic within the topic), data and optional event type."""

    id: str
    data: str
    event: str | None = None


def parse_sequence(last_event_id: str | None) -> int | None:
    """The sequence number in a ``Last-Event-ID`` issued by :class:`~chute.brokers.MemoryBroker`; ``None`` when
    absent or empty (start live); :class:`~chute.exceptions.BadRequest` when it is not one of ours."""
    if last_event_id is None or last_event_id == "":
        return None
    if len(last_event_id) > MAX_ID_LENGTH or not last_event_id.isascii() or not last_event_id.isdigit():
        raise BadRequest(f"Last-Event-ID {last_event_id[:MAX_ID_LENGTH]!r} is not an id this server issued")
    return int(last_event_id)


class Broker(Protocol):
    """An event log with replay, shared by every subscriber the broker reaches (one process or many).

    Ids are opaque strings, monotonic within a topic. ``subscribe`` first yields what came after
    ``last_event_id`` (a :data:`RESET` message first when some of it is no longer retained), then follows live;
    without an id it starts live. ``check_id`` raises :class:`~chute.exceptions.BadRequest` for an id this kind
    of broker never issues, so a service can answer 400 before it starts a stream.
    """

    async def publish(self, topic: str, data: str, event: str | None = None) -> str: ...

    def subscribe(self, topic: str, last_event_id: str | None = None) -> AsyncGenerator[Message, None]: ...

    def check_id(self, last_event_id: str | None) -> None: ...

    async def aclose(self) -> None: ...
