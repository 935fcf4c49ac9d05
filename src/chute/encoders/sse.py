"""Server-Sent Events (WHATWG HTML §9.2), encoded: pure, synchronous, UTF-8.

No payload can start a new field or event: data is split on every line break the parser recognises (CRLF, CR,
LF) into one ``data:`` line each, and comments likewise; ``event`` and ``id`` must be single lines (and ``id`` free
of NUL, which makes browsers ignore it), checked when the :class:`Event` is built, so a bad value fails at the call
site rather than in the middle of a stream.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgspec

from chute.exceptions import ConfigurationError

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_JSON = msgspec.json.Encoder(decimal_format="string", uuid_format="canonical")


def _lines(text: str) -> list[str]:
    return _LINE_BREAK.split(text)


@dataclasses.dataclass(frozen=True)
class Event:
    """One event. ``data`` is text (use :func:`json_event` for JSON); ``retry`` is the reconnection delay in
    milliseconds; ``comment`` is sent as ``:`` lines, which clients ignore (heartbeats use it)."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None and (not self.event or _LINE_BREAK.search(self.event)):
            raise ConfigurationError(f"an SSE event name is one non-empty line: {self.event!r}")
        if self.id is not None and (_LINE_BREAK.search(self.id) or "\x00" in self.id):
            raise ConfigurationError(f"an SSE id is one line without NUL: {self.id!r}")
        if self.retry is not None and (isinstance(self.retry, bool) or self.retry < 0):
            raise ConfigurationError(f"an SSE retry is a non-negative number of milliseconds: {self.retry!r}")

    def encode(self) -> bytes:
        """The event's lines, ending with the blank line that dispatches it."""
        out: list[str] = []
        if self.comment is not None:
            out += [f":{line}" for line in _lines(self.comment)]
        if self.retry is not None:
            out.append(f"retry: {self.retry}")
        if self.id is not None:
            out.append(f"id: {self.id}")
        if self.event is not None:
            out.append(f"event: {self.event}")
        if self.data is not None:
            out += [f"data: {line}" for line in _lines(self.data)]
        return ("\n".join(out) + "\n\n").encode()


def json_event(value: Any, *, event: str | None = None, id: str | None = None) -> Event:
    """An event whose data is ``value`` as compact JSON (one line: JSON escapes every line break)."""
    return Event(data=_JSON.encode(value).decode(), event=event, id=id)


def comment(text: str = "") -> bytes:
    """A comment-only message (a heartbeat): keeps the connection alive, dispatches nothing."""
    return Event(comment=text).encode()
