"""The SSE encoder, checked against a parser written from the WHATWG event stream algorithm."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute.encoders.sse import Event, comment, json_event
from chute.exceptions import ConfigurationError

Dispatched = list[tuple[str, str, str | None]]  # (event type, data, last event id)


def parse(stream: bytes) -> tuple[Dispatched, list[int]]:
    """WHATWG HTML §9.2.6, as a browser's EventSource runs it: the events dispatched and retry values seen."""
    text = stream.decode("utf-8")
    events: Dispatched = []
    retries: list[int] = []
    data: list[str] = []
    event_type = ""
    last_id: str | None = None
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if data:
                events.append((event_type or "message", "\n".join(data), last_id))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id" and "\x00" not in value:
            last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            retries.append(int(value))
    return events, retries


TEXT = st.text(alphabet=st.characters(codec="utf-8"))
ONE_LINE = TEXT.filter(lambda s: not re.search(r"[\r\n]", s))


@given(data=TEXT, event=ONE_LINE.filter(bool), id=ONE_LINE.filter(lambda s: "\x00" not in s))
def test_any_payload_arrives_as_one_event(data: str, event: str, id: str) -> None:
    events, _ = parse(Event(data=data, event=event, id=id).encode())
    # Line breaks of any kind arrive as LF: the parser cannot tell them apart, and no payload can split the event.
    assert events == [(event, re.sub(r"\r\n|\r", "\n", data), id)]


@given(st.lists(TEXT, min_size=1, max_size=5))
def test_a_sequence_of_events_stays_a_sequence(payloads: list[str]) -> None:
    stream = b"".join(Event(data=payload).encode() for payload in payloads)
    assert [data for _, data, _ in parse(stream)[0]] == [re.sub(r"\r\n|\r", "\n", p) for p in payloads]


def test_injection_attempts_stay_data() -> None:
    payload = "hello\n\nevent: admin\ndata: pwned\r\nid: 999\rretry: 1"
    events, retries = parse(Event(data=payload).encode())
    assert events == [("message", "hello\n\nevent: admin\ndata: pwned\nid: 999\nretry: 1", None)]
    assert retries == []


def test_exact_bytes() -> None:
    assert Event(data="a\nb", event="tick", id="7", retry=1500).encode() == (
        b"retry: 1500\nid: 7\nevent: tick\ndata: a\ndata: b\n\n"
    )
    assert Event(data="").encode() == b"data: \n\n"
    assert Event(data="café ☕").encode() == "data: café ☕\n\n".encode()


def test_comments_and_heartbeats_dispatch_nothing() -> None:
    assert comment() == b":\n\n"
    assert comment("keep-alive\nstill here") == b":keep-alive\n:still here\n\n"
    assert parse(comment("x\ndata: sneaky"))[0] == []


def test_retry_is_seen_by_the_parser() -> None:
    assert parse(Event(retry=3000).encode())[1] == [3000]


def test_json_event_is_one_line_of_json() -> None:
    event = json_event({"text": "two\nlines", "n": 1}, event="update", id="42")
    events, _ = parse(event.encode())
    assert len(events) == 1
    assert json.loads(events[0][1]) == {"text": "two\nlines", "n": 1}
    assert events[0][0] == "update"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "two\nlines"},
        {"event": "cr\rhere"},
        {"event": ""},
        {"id": "a\nb"},
        {"id": "nul\x00"},
        {"retry": -1},
        {"retry": True},
    ],
)
def test_invalid_fields_fail_at_the_call_site(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Event(data="x", **kwargs)  # type: ignore[arg-type]
