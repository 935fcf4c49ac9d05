"""What every broker shares: the message, the id rules, and the reset that replaces silently lost events."""

from __future__ import annotations

import dataclasses

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
