"""``chute.client.events`` and its parser: the parser against the WHATWG algorithm (the oracle of
tests/encoders/test_sse.py) and cut into chunks anywhere; the feed against real servers on uvicorn."""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chute import ChuteError, ClientError, ConfigurationError, EventStream, StreamLimit
from chute.client import EventStreamParser, ReceivedEvent, events, reconnect_delay
from chute.encoders.sse import Event
from chute.exceptions import FeedError
from tests.conftest import ServeApp, free_port
from tests.encoders.test_sse import parse as whatwg_parse
from tests.sse import NumberedFeed

events_module = importlib.import_module("chute.client.events")  # `chute.client.events` is the function


def parse(*chunks: bytes, last_event_id: str | None = None) -> tuple[list[ReceivedEvent], EventStreamParser, list[str]]:
    """The events of a whole stream fed in ``chunks``, the parser after :meth:`end`, and the comments seen."""
    comments: list[str] = []
    parser = EventStreamParser(last_event_id=last_event_id, on_comment=comments.append)
    out = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.end()
    return out, parser, comments


def data(*chunks: bytes) -> list[str]:
    return [event.data for event in parse(*chunks)[0]]


# -- the parser, field by field


def test_fields_make_events() -> None:
    stream = b"retry: 1500\nid: 7\nevent: tick\ndata: a\ndata: b\n\ndata: c\n\n"
    found, parser, _ = parse(stream)
    assert found == [
        ReceivedEvent(data="a\nb", event="tick", id="7"),
        ReceivedEvent(data="c", id="7"),
    ]  # the id carries over
    assert (parser.retry, parser.last_event_id) == (1500, "7")


def test_what_the_encoder_writes_comes_back() -> None:
    sent = [Event(data="x\ny", event="update", id="1"), Event(data="", id="2"), Event(data="café ☕", id="3")]
    found = parse(b"".join(event.encode() for event in sent))[0]
    assert [(event.data, event.event, event.id) for event in found] == [(e.data, e.event, e.id) for e in sent]
    # A received event is an Event: a relay can send it on as it came.
    assert b"".join(event.encode() for event in found) == b"".join(event.encode() for event in sent)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data:x\n\n", ["x"]),
        (b"data:  x\n\n", [" x"]),  # only one space goes
        (b"data: x \n\n", ["x "]),
        (b"data\n\n", [""]),  # a field without colon has an empty value
        (b"data\ndata\n\n", ["\n"]),
        (b"data:\n\n", [""]),
        (b"Data: x\n\n", []),  # names are case-sensitive
        (b"data : x\n\n", []),  # "data " is another field
        (b"foo: bar\ndata: x\n\n", ["x"]),  # unknown fields are ignored
        (b"data: a:b: c\n\n", ["a:b: c"]),
        (b"\n\n\ndata: x\n\n\n\n", ["x"]),  # blank lines alone dispatch nothing
    ],
)
def test_line_syntax(stream: bytes, expected: list[str]) -> None:
    assert data(stream) == expected


def test_line_breaks_of_every_kind() -> None:
    assert data(b"data: a\r\ndata: b\rdata: c\n\r\n") == ["a\nb\nc"]
    assert data(b"data: a\r\rdata: b\n\ndata: c\r\n\r\n") == ["a", "b", "c"]


def test_a_crlf_cut_between_its_cr_and_lf_is_one_line_break() -> None:
    # Were the LF a line of its own, it would dispatch "a" alone.
    assert data(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == ["a\nb"]
    assert data(b"data: a\r", b"\n", b"\r\n") == ["a"]


def test_a_cr_dispatches_without_waiting_for_the_next_chunk() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r\r") == [ReceivedEvent(data="a")]
    assert parser.feed(b"\ndata: b\n\n") == [ReceivedEvent(data="b")]  # that LF ended the blank line: nothing more


def test_one_leading_bom_is_dropped() -> None:
    assert data(b"\xef\xbb\xbfdata: x\n\n") == ["x"]
    assert data(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == ["x"]
    # A second BOM is part of the first field's name, which no longer is "data".
    assert data(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == ["y"]
    assert data(b"data: \xef\xbb\xbfx\n\n") == ["\ufeffx"]  # not at the start: kept


def test_utf8_cut_anywhere_and_invalid_bytes() -> None:
    encoded = "data: café ☕ 🙂\n\n".encode()
    assert data(*(encoded[i : i + 1] for i in range(len(encoded)))) == ["café ☕ 🙂"]
    assert data(b"data: a\xffb\xe2\x98\n\n") == ["a\ufffdb\ufffd"]


def test_comments_are_reported_not_dispatched() -> None:
    found, _, comments = parse(b":\n: keep-alive\r\n:data: x\n\n")
    assert found == []
    assert comments == ["", " keep-alive", "data: x"]


def test_an_id_with_nul_is_ignored() -> None:
    found, parser, _ = parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [event.id for event in found] == ["1", "1"]
    assert parser.last_event_id == "1"


def test_an_empty_id_resets_the_last_event_id() -> None:
    found, parser, _ = parse(b"id: 5\ndata: a\n\nid\ndata: b\n\nid: 6\ndata: c\n\nid:\ndata: d\n\n")
    assert [event.id for event in found] == ["5", None, "6", None]
    assert parser.last_event_id is None


def test_an_event_without_data_is_not_dispatched_but_sets_the_id_and_clears_the_type() -> None:
    found, parser, _ = parse(b"id: 7\nevent: x\n\n")
    assert (found, parser.last_event_id) == ([], "7")
    found, _, _ = parse(b"event: x\n\ndata: y\n\n")
    assert found == [ReceivedEvent(data="y")]


def test_the_type_resets_after_each_event() -> None:
    found, _, _ = parse(b"event: x\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [event.event for event in found] == ["x", None, None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0),
        (b"50", 50),
        (b"007", 7),
        (b"12a", None),
        (b"-5", None),
        (b"1.5", None),
        (b" 50", None),  # two spaces after the colon: the value starts with one
        (b"", None),
        ("\uff15\uff10".encode(), None),  # digits, but not ASCII ones
        (b"9" * 5000, 10**15),  # clamped, not an error
    ],
)
def test_retry_takes_ascii_digits_only(value: bytes, expected: int | None) -> None:
    _, parser, _ = parse(b"retry: " + value + b"\n\n")
    assert parser.retry == expected


def test_retry_applies_at_once_and_the_last_valid_one_wins() -> None:
    parser = EventStreamParser()
    parser.feed(b"retry: 100\nretry: x\n")  # no blank line yet: a retry field needs none
    assert parser.retry == 100


def test_an_unfinished_event_is_discarded_at_the_end_and_its_id_too() -> None:
    found, parser, _ = parse(b"id: 1\ndata: one\n\nid: 2\ndata: two\n")
    assert [event.data for event in found] == ["one"]
    assert parser.last_event_id == "1"
    assert data(b"data: one\n\ndata: two") == ["one"]
    # After end() the parser starts a fresh stream, keeping the id.
    assert parser.feed(b"data: three\n\n") == [ReceivedEvent(data="three", id="1")]


def test_the_id_resumed_from_carries_over() -> None:
    found, parser, _ = parse(b"data: a\n\n", last_event_id="41")
    assert found == [ReceivedEvent(data="a", id="41")]
    assert parser.last_event_id == "41"
    assert EventStreamParser(last_event_id="").last_event_id is None


# -- the parser, against the WHATWG oracle and cut anywhere

VALUE = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\ufeff"), max_size=8)
FIELD_LINE = st.builds(
    lambda name, separator, value: name + separator + value,
    st.sampled_from(["data", "event", "id", "retry", "", "dat", "Data", "data ", "foo"]),
    st.sampled_from([":", ": ", ":  ", ""]),
    VALUE | st.sampled_from(["0", "50", "3000", "12a", "\x00", "x\x00"]),
)
LINE = FIELD_LINE | VALUE.map(lambda value: ":" + value) | st.just("")
LINES = st.lists(st.tuples(LINE, st.sampled_from(["\n", "\r", "\r\n"])), max_size=30)


def stream_of(lines: list[tuple[str, str]]) -> bytes:
    return "".join(line + end for line, end in lines).encode()


@given(LINES)
def test_the_parser_agrees_with_the_whatwg_oracle(lines: list[tuple[str, str]]) -> None:
    stream = stream_of(lines) + b"\n\n"  # the oracle dispatches at the end what the spec discards: end cleanly
    found, parser, _ = parse(stream)
    expected, retries = whatwg_parse(stream)
    assert [(event.event or "message", event.data, event.id) for event in found] == [
        (kind, text, last_id or None) for kind, text, last_id in expected
    ]
    assert parser.retry == (retries[-1] if retries else None)


@given(st.data())
def test_chunk_boundaries_change_nothing(draw: st.DataObject) -> None:
    stream = draw.draw(st.binary(max_size=200) | LINES.map(stream_of), label="stream")
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole, whole_parser, whole_comments = parse(stream)
    pieces, pieces_parser, pieces_comments = parse(*chunks)
    assert pieces == whole
    assert pieces_comments == whole_comments
    assert (pieces_parser.retry, pieces_parser.last_event_id) == (whole_parser.retry, whole_parser.last_event_id)


TEXT = st.text(alphabet=st.characters(codec="utf-8"))
ONE_LINE = TEXT.filter(lambda s: not re.search(r"[\r\n]", s))


@given(
    st.lists(
        st.builds(
            Event,
            data=TEXT,
            event=st.none() | ONE_LINE.filter(bool),
            id=ONE_LINE.filter(lambda s: bool(s) and "\x00" not in s),
        ),
        max_size=5,
    )
)
def test_every_encoded_event_is_parsed_back(sent: list[Event]) -> None:
    stream = b"".join(event.encode() for event in sent)
    expected = [ReceivedEvent(data=re.sub(r"\r\n|\r", "\n", str(e.data)), event=e.event, id=e.id) for e in sent]
    assert parse(stream)[0] == expected
    assert parse(*(stream[i : i + 1] for i in range(len(stream))))[0] == expected


# -- the backoff


def test_without_jitter_the_wait_is_the_reconnection_time() -> None:
    assert [reconnect_delay(3.0, n, jitter=lambda: 0.0) for n in range(10)] == [3.0] * 10


def test_the_ceiling_doubles_with_each_failure_up_to_the_cap() -> None:
    ceilings = [reconnect_delay(1.0, n, max_retry=30.0, jitter=lambda: 1.0) for n in range(8)]
    assert ceilings == [1.5, 3.0, 6.0, 12.0, 24.0, 30.0, 30.0, 30.0]
    halfway = [reconnect_delay(1.0, n, max_retry=30.0, jitter=lambda: 0.5) for n in range(3)]
    assert halfway == [1.25, 2.0, 3.5]
    assert reconnect_delay(1.0, 100_000, max_retry=30.0, jitter=lambda: 1.0) == 30.0  # no overflow


def test_the_server_wins_over_the_cap() -> None:
    assert reconnect_delay(120.0, 5, max_retry=30.0, jitter=lambda: 1.0) == 120.0


def test_retry_zero_still_backs_off_on_failures() -> None:
    assert reconnect_delay(0.0, 0, jitter=lambda: 0.0) == 0.0
    assert [reconnect_delay(0.0, n, max_retry=1.0, jitter=lambda: 1.0) for n in range(5)] == pytest.approx(
        [0.15, 0.3, 0.6, 1.0, 1.0]
    )


@given(st.floats(0, 100), st.integers(0, 50), st.floats(0, 100), st.floats(0, 1, exclude_max=True))
def test_the_wait_stays_within_its_bounds(time_: float, failures: int, cap: float, draw: float) -> None:
    delay = reconnect_delay(time_, failures, max_retry=cap, jitter=lambda: draw)
    assert time_ <= delay <= max(time_, cap)
    assert delay <= reconnect_delay(time_, failures + 1, max_retry=cap, jitter=lambda: draw)


# -- the feed, against real servers


async def collect(url: str, **options: Any) -> list[ReceivedEvent]:
    with anyio.fail_after(15):
        async with aclosing(events(url, **options)) as feed:
            return [event async for event in feed]


def app_of(endpoint: Callable[[Request], Any]) -> Starlette:
    return Starlette(routes=[Route("/feed", endpoint)])


@pytest.mark.anyio
async def test_reconnects_with_last_event_id_and_gets_no_duplicate(serve_app: ServeApp) -> None:
    feed = NumberedFeed(7, per_connection=3)
    found = await collect(f"{serve_app(feed.app)}/feed")
    assert [(event.data, event.id) for event in found] == [(f"event {n}", str(n)) for n in range(1, 8)]
    assert [visit.last_event_id for visit in feed.visits] == [None, "3", "6", "7"]  # the last one answered 204
    for visit in feed.visits:
        assert visit.headers["accept"] == "text/event-stream"
        assert visit.headers["cache-control"] == "no-cache"


@pytest.mark.anyio
async def test_starts_after_the_given_id_and_sends_the_given_headers(serve_app: ServeApp) -> None:
    feed = NumberedFeed(6, per_connection=6)
    options = {"last_event_id": "4", "headers": {"x-token": "secret", "Accept": "text/html", "last-event-id": "1"}}
    found = await collect(f"{serve_app(feed.app)}/feed", **options)
    assert [event.id for event in found] == ["5", "6"]
    assert feed.visits[0].last_event_id == "4"  # the argument wins over a header
    assert feed.visits[0].headers["x-token"] == "secret"
    assert feed.visits[0].headers["accept"] == "text/event-stream"


@pytest.mark.anyio
async def test_a_last_event_id_header_is_the_starting_point_without_the_argument(serve_app: ServeApp) -> None:
    feed = NumberedFeed(3, per_connection=3)
    found = await collect(f"{serve_app(feed.app)}/feed", headers={"Last-Event-ID": "2"})
    assert [event.id for event in found] == ["3"]


@pytest.mark.anyio
async def test_the_retry_field_sets_the_reconnection_time(serve_app: ServeApp) -> None:
    feed = NumberedFeed(2, per_connection=1, retry=300)
    await collect(f"{serve_app(feed.app)}/feed", retry=5.0)  # 5 s unless the server's 300 ms is honoured
    first, second = feed.visits[:2]
    assert first.ended is not None
    assert 0.28 <= second.started - first.ended < 2.0  # 300 ms plus up to half of it in jitter


@pytest.mark.anyio
async def test_a_non_ascii_id_goes_back_as_utf8(serve_app: ServeApp) -> None:
    seen: list[bytes | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(dict(request.scope["headers"]).get(b"last-event-id"))
        if len(seen) > 1:
            return Response(status_code=204)
        return Response("retry: 10\nid: café ☕\ndata: x\n\n", media_type="text/event-stream")

    found = await collect(f"{serve_app(app_of(endpoint))}/feed")
    assert found == [ReceivedEvent(data="x", id="café ☕")]
    assert seen == [None, "café ☕".encode()]


@pytest.mark.anyio
async def test_an_unfinished_event_at_the_end_is_dropped_and_its_id_not_sent(serve_app: ServeApp) -> None:
    seen: list[str | None] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) > 1:
            return Response(status_code=204)
        return Response("retry: 10\nid: 1\ndata: one\n\nid: 2\ndata: two\n", media_type="text/event-stream")

    found = await collect(f"{serve_app(app_of(endpoint))}/feed")
    assert [event.data for event in found] == ["one"]
    assert seen == [None, "1"]


@pytest.mark.anyio
async def test_204_ends_the_feed_at_once(serve_app: ServeApp) -> None:
    visits: list[float] = []

    async def endpoint(request: Request) -> Response:
        visits.append(time.monotonic())
        return Response(status_code=204)

    assert await collect(f"{serve_app(app_of(endpoint))}/feed") == []
    assert len(visits) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (500, "the broker is down"),
        (404, "no such topic"),
        (400, "a Last-Event-ID that no broker issued"),
        (503, "maintenance"),  # 503 without Retry-After: an error like the others
    ],
)
async def test_an_error_status_raises_and_is_not_retried(serve_app: ServeApp, status: int, detail: str) -> None:
    visits: list[int] = []

    async def endpoint(request: Request) -> Response:
        visits.append(1)
        return JSONResponse(
            {"title": "Error", "detail": detail}, status_code=status, media_type="application/problem+json"
        )

    with pytest.raises(FeedError) as caught:
        await collect(f"{serve_app(app_of(endpoint))}/feed")
    assert (caught.value.status, caught.value.detail) == (status, detail)
    assert f"{status} " in str(caught.value)
    assert detail in str(caught.value)
    assert isinstance(caught.value, ClientError)
    assert isinstance(caught.value, ChuteError)
    assert len(visits) == 1


@pytest.mark.anyio
async def test_a_wrong_content_type_raises(serve_app: ServeApp) -> None:
    async def endpoint(request: Request) -> Response:
        return Response("data: x\n\n", media_type="text/plain")

    with pytest.raises(FeedError, match="text/plain") as caught:
        await collect(f"{serve_app(app_of(endpoint))}/feed")
    assert caught.value.status == 200


@pytest.mark.anyio
async def test_503_with_retry_after_is_retried_after_it(serve_app: ServeApp) -> None:
    feed = NumberedFeed(2, per_connection=2)
    refused: list[float] = []

    async def endpoint(request: Request) -> Response:
        if not refused:
            refused.append(time.monotonic())
            response = JSONResponse({"detail": "too many live feeds"}, status_code=503)
            response.headers["retry-after"] = "1"
            return response
        return await feed.endpoint(request)

    notices: list[tuple[str, float]] = []
    found = await collect(
        f"{serve_app(app_of(endpoint))}/feed",
        retry=0.01,
        max_retry=1.0,  # no jitter above Retry-After: keeps the test short
        on_reconnect=lambda why, delay: notices.append((why, delay)),
    )
    assert [event.id for event in found] == ["1", "2"]
    assert feed.visits[0].started - refused[0] >= 0.95
    assert notices[0][0].startswith("503 Service Unavailable")
    assert notices[0][1] >= 1.0


@pytest.mark.anyio
async def test_a_chute_server_at_its_cap_is_waited_for(serve_app: ServeApp) -> None:
    """The real thing: EventStream at its cap answers 503 + Retry-After until a slot is free."""
    feed = NumberedFeed(2, per_connection=2, limit=StreamLimit(1, retry_after=1))

    async def forever() -> AsyncIterator[str]:
        yield "held"
        await anyio.sleep(3600)

    async def endpoint(request: Request) -> Response:
        if request.query_params.get("hold"):
            return EventStream(forever(), limit=feed.limit)
        return await feed.endpoint(request)

    base_url = serve_app(app_of(endpoint))
    found: list[ReceivedEvent] = []

    async def follow() -> None:
        found.extend(await collect(f"{base_url}/feed", retry=0.01, max_retry=1.0))

    with anyio.fail_after(15):
        async with aclosing(events(f"{base_url}/feed?hold=1")) as holder, anyio.create_task_group() as group:
            assert (await anext(holder)).data == "held"
            group.start_soon(follow)
            await anyio.sleep(0.3)
            await holder.aclose()  # frees the slot: the next attempt, a second later, gets in
    assert [event.id for event in found] == ["1", "2"]


@pytest.mark.anyio
async def test_a_stalled_connection_is_dropped_after_the_read_timeout(serve_app: ServeApp) -> None:
    visits: list[str | None] = []
    released = threading.Event()

    async def stall() -> AsyncIterator[Event]:
        try:
            yield Event(data="one", id="1")
            await anyio.sleep(3600)
        finally:
            released.set()

    async def endpoint(request: Request) -> Response:
        visits.append(request.headers.get("last-event-id"))
        if len(visits) > 1:
            return Response(status_code=204)
        return EventStream(stall(), heartbeat=3600, retry=10)

    notices: list[str] = []
    started = time.monotonic()
    found = await collect(
        f"{serve_app(app_of(endpoint))}/feed", read_timeout=0.3, on_reconnect=lambda why, _: notices.append(why)
    )
    assert [event.data for event in found] == ["one"]
    assert visits == [None, "1"]
    assert time.monotonic() - started < 5
    assert "stopped sending" in notices[0]
    assert released.wait(2)  # the server saw the client leave


@pytest.mark.anyio
async def test_a_cut_connection_is_resumed(serve_app: ServeApp) -> None:
    visits: list[str | None] = []

    async def broken() -> AsyncIterator[Event]:
        yield Event(data="one", id="1")
        raise RuntimeError("the broker went away")  # EventStream aborts the connection

    async def endpoint(request: Request) -> Response:
        visits.append(request.headers.get("last-event-id"))
        if len(visits) > 1:
            return Response(status_code=204)
        return EventStream(broken(), retry=10)

    notices: list[str] = []
    found = await collect(f"{serve_app(app_of(endpoint))}/feed", on_reconnect=lambda why, _: notices.append(why))
    assert [event.data for event in found] == ["one"]
    assert visits == [None, "1"]
    assert "cut" in notices[0]


@pytest.mark.anyio
async def test_closing_the_iterator_closes_the_connection(serve_app: ServeApp) -> None:
    released = threading.Event()

    async def idle() -> AsyncIterator[Event]:
        try:
            yield Event(data="first", id="1")
            await anyio.sleep(3600)
        finally:
            released.set()

    async def endpoint(request: Request) -> Response:
        return EventStream(idle(), heartbeat=3600)

    with anyio.fail_after(10):
        feed = events(f"{serve_app(app_of(endpoint))}/feed")
        assert (await anext(feed)).data == "first"
        await feed.aclose()
        assert await anyio.to_thread.run_sync(released.wait, 5.0)


@pytest.mark.anyio
async def test_a_given_client_is_used_and_left_open(serve_app: ServeApp) -> None:
    feed = NumberedFeed(2, per_connection=2)
    async with httpx.AsyncClient(headers={"x-client": "mine"}) as client:
        found = await collect(f"{serve_app(feed.app)}/feed", client=client)
        assert not client.is_closed
    assert [event.id for event in found] == ["1", "2"]
    assert feed.visits[0].headers["x-client"] == "mine"


@pytest.mark.anyio
async def test_an_unreachable_server_is_given_up_after_max_failures() -> None:
    notices: list[tuple[str, float]] = []
    with pytest.raises(FeedError, match="gave up after 3 failed attempts") as caught:
        await collect(
            f"http://127.0.0.1:{free_port()}/feed",
            retry=0.01,
            max_retry=0.05,
            max_failures=3,
            on_reconnect=lambda why, delay: notices.append((why, delay)),
        )
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.status is None
    assert len(notices) == 2
    assert all("cannot connect" in why for why, _ in notices)


@pytest.mark.anyio
async def test_failures_count_in_a_row_and_reset_when_something_arrives(
    serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["busy", "busy", "events", "busy", "end"]
    asked: list[tuple[float, int]] = []

    def recorded(reconnection_time: float, failures: int, **options: Any) -> float:
        asked.append((reconnection_time, failures))
        return 0.01

    monkeypatch.setattr(events_module, "reconnect_delay", recorded)

    async def endpoint(request: Request) -> Response:
        answer = answers.pop(0)
        if answer == "busy":
            return Response(status_code=503, headers={"retry-after": "0"})
        if answer == "end":
            return Response(status_code=204)
        return Response("retry: 20\ndata: x\n\n", media_type="text/event-stream")

    found = await collect(f"{serve_app(app_of(endpoint))}/feed", retry=0.05)
    assert [event.data for event in found] == ["x"]
    assert asked == [(0.05, 1), (0.05, 2), (0.02, 0), (0.02, 1)]


@pytest.mark.anyio
async def test_an_invalid_url_raises_at_once() -> None:
    with pytest.raises(FeedError, match="ftp"):
        await collect("ftp://example.invalid/feed")


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{"retry": -1.0}, {"max_retry": -1.0}, {"max_failures": 0}])
async def test_bad_options_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        await collect("http://127.0.0.1:1/feed", **options)


def test_an_event_past_the_size_bound_is_refused_not_buffered() -> None:
    endless_line = EventStreamParser(max_event_size=1000)
    endless_line.feed(b"data: " + b"x" * 600)
    with pytest.raises(FeedError, match="more than 1,000 characters"):
        endless_line.feed(b"x" * 600)
    many_lines = EventStreamParser(max_event_size=1000)
    many_lines.feed(b"data: " + b"y" * 99 + b"\n" * 1)
    with pytest.raises(FeedError):
        many_lines.feed((b"data: " + b"y" * 99 + b"\n") * 10)
    bounded = EventStreamParser(max_event_size=1000)
    for _ in range(50):  # the bound is per event: many events of any total size pass
        assert [e.data for e in bounded.feed(b"data: " + b"z" * 500 + b"\n\n")] == ["z" * 500]
