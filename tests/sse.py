"""A test helper for infinite streams: read N events or until a deadline, then disconnect cleanly."""

from __future__ import annotations

import time

import httpx

from chute.encoders.sse import Event


def read_events(
    url: str,
    count: int,
    *,
    within: float = 5.0,
    headers: dict[str, str] | None = None,
    comments: list[str] | None = None,
) -> list[Event]:
    """The first ``count`` events of the feed at ``url`` (fewer if ``within`` seconds pass); comments seen are
    appended to ``comments``. The connection is closed when this returns, whatever the feed does next."""
    events: list[Event] = []
    deadline = time.monotonic() + within
    fields: dict[str, str] = {}
    data: list[str] = []
    with httpx.stream("GET", url, headers=headers, timeout=within) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "":
                if data:
                    events.append(Event(data="\n".join(data), event=fields.get("event"), id=fields.get("id")))
                data, fields = [], {}
            elif line.startswith(":"):
                if comments is not None:
                    comments.append(line[1:])
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name in ("event", "id"):
                    fields[name] = value
            if len(events) >= count or time.monotonic() > deadline:
                break
    return events
