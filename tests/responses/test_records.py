"""``RecordStream`` at the ASGI level: hand-written ``receive``/``send``, no server."""

import csv
import inspect
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import anyio
import fastapi
import httpx
import pytest
from starlette.background import BackgroundTask
from starlette.types import Message, Scope

from chute import ConfigurationError, EncodeError, NotFound, RecordStream, SendTimeout, StreamAborted

pytestmark = pytest.mark.anyio

RECORDS = [{"id": i, "name": f"item {i}", "price": None if i == 1 else i * 1.5} for i in range(3)]
ALL_TYPES = ["application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json", "text/csv"]


def http_scope(method: str = "GET", accept: str | None = None) -> Scope:
    headers = [] if accept is None else [(b"accept", accept.encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


class Client:
    """The server side of one request as a client would drive it.

    ``disconnect_after``: seconds after the request body until ``receive`` reports ``http.disconnect``
    (never when ``None``). ``stall_after``: body messages accepted before ``send`` blocks forever, as it does
    when the client stops reading (``0`` blocks on the very first message, headers included).
    """

    def __init__(self, *, disconnect_after: float | None = None, stall_after: int | None = None) -> None:
        self.disconnect_after = disconnect_after
        self.stall_after = stall_after
        self.messages: list[Message] = []
        self.times: list[float] = []
        self.began = time.monotonic()
        self._requested = False

    async def receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.disconnect_after is None:
            await anyio.sleep_forever()
        else:
            await anyio.sleep(self.disconnect_after)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.stall_after is not None and (self.stall_after == 0 or len(self.bodies) >= self.stall_after):
            await anyio.sleep_forever()
        self.messages.append(message)
        self.times.append(time.monotonic())

    @property
    def start(self) -> Message:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def status(self) -> int:
        status: int = self.start["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        return {key.decode(): value.decode() for key, value in self.start["headers"]}

    @property
    def bodies(self) -> list[Message]:
        return [message for message in self.messages if message["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(message["body"] for message in self.bodies)

    @property
    def complete(self) -> bool:
        """Whether the last body message ended the response (a cut stream never sends one)."""
        return bool(self.bodies) and not self.bodies[-1].get("more_body", False)


async def run(stream: RecordStream, scope: Scope | None = None, client: Client | None = None) -> Client:
    client = client or Client()
    with anyio.fail_after(10):
        await stream(scope or http_scope(), client.receive, client.send)
    return client


async def aiterate(records: list[Any]) -> AsyncIterator[Any]:
    for record in records:
        yield record


def ndjson(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.splitlines()]


# -- complete responses


@pytest.mark.parametrize(
    ("fmt", "content_type", "expected"),
    [
        (
            "ndjson",
            "application/x-ndjson; charset=utf-8",
            b'{"id":0,"name":"item 0","price":0.0}\n{"id":1,"name":"item 1","price":null}\n'
            b'{"id":2,"name":"item 2","price":3.0}\n',
        ),
        (
            "jsonl",
            "application/jsonl; charset=utf-8",
            b'{"id":0,"name":"item 0","price":0.0}\n{"id":1,"name":"item 1","price":null}\n'
            b'{"id":2,"name":"item 2","price":3.0}\n',
        ),
        (
            "json",
            "application/json; charset=utf-8",
            b'[{"id":0,"name":"item 0","price":0.0},{"id":1,"name":"item 1","price":null},'
            b'{"id":2,"name":"item 2","price":3.0}]',
        ),
        ("csv", "text/csv; charset=utf-8", b"id,name,price\r\n0,item 0,0.0\r\n1,item 1,\r\n2,item 2,3.0\r\n"),
    ],
)
async def test_full_body_in_a_fixed_format(fmt: str, content_type: str, expected: bytes) -> None:
    stream = RecordStream(aiterate(RECORDS), format=fmt)
    client = await run(stream)
    assert client.status == 200
    assert client.body == expected
    assert client.complete
    assert client.headers["content-type"] == content_type
    assert client.headers["x-content-type-options"] == "nosniff"
    assert "vary" not in client.headers
    assert "content-length" not in client.headers
    assert stream.outcome == "complete"
    assert stream.records_sent == 3


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/x-ndjson; charset=utf-8"),
        ("text/csv", "text/csv; charset=utf-8"),
        ("application/json", "application/json; charset=utf-8"),
        ("application/jsonl", "application/jsonl; charset=utf-8"),
    ],
)
async def test_negotiated_format_varies_by_accept(accept: str | None, content_type: str) -> None:
    client = await run(RecordStream(list(RECORDS)), http_scope(accept=accept))
    assert client.headers["content-type"] == content_type
    assert client.headers["vary"] == "Accept"
    assert client.complete


async def test_sync_sources_give_the_same_body() -> None:
    from_list = await run(RecordStream(list(RECORDS), format="csv"))
    from_async = await run(RecordStream(aiterate(RECORDS), format="csv"))
    assert from_list.body == from_async.body


async def test_empty_sources() -> None:
    assert (await run(RecordStream([], format="json"))).body == b"[]"
    assert (await run(RecordStream([], format="ndjson"))).body == b""
    assert (await run(RecordStream([], format="csv", columns=["a", "b"]))).body == b"a,b\r\n"
    assert (await run(RecordStream([], format="csv"))).complete


async def test_rows_with_columns_batched_source_and_csv_options() -> None:
    stream = RecordStream(
        iter([[(1, "a;b")], [], [(2, "c")]]),
        format="csv",
        columns=["id", "text"],
        batched=True,
        delimiter=";",
        bom=True,
    )
    client = await run(stream)
    assert client.body == b'\xef\xbb\xbfid;text\r\n1;"a;b"\r\n2;c\r\n'


@pytest.mark.parametrize(
    ("filename", "fmt", "disposition"),
    [
        ("orders", "csv", 'attachment; filename="orders.csv"'),
        ("orders", "jsonl", 'attachment; filename="orders.jsonl"'),
        ("orders", "ndjson", 'attachment; filename="orders.ndjson"'),
        ("orders.txt", "json", 'attachment; filename="orders.txt"'),
        (
            "../commandes été",
            "csv",
            "attachment; filename=\"commandes ete.csv\"; filename*=UTF-8''commandes%20%C3%A9t%C3%A9.csv",
        ),
    ],
)
async def test_content_disposition(filename: str, fmt: str, disposition: str) -> None:
    client = await run(RecordStream(list(RECORDS), format=fmt, filename=filename))
    assert client.headers["content-disposition"] == disposition


async def test_custom_headers_and_status_are_kept_but_content_type_is_ours() -> None:
    stream = RecordStream(
        list(RECORDS), format="csv", status_code=203, headers={"x-trace": "abc", "content-type": "text/plain"}
    )
    client = await run(stream)
    assert client.status == 203
    assert client.headers["x-trace"] == "abc"
    assert client.headers["content-type"] == "text/csv; charset=utf-8"
    assert [key for key, _ in client.start["headers"]].count(b"content-type") == 1


async def test_end_record_for_json_formats_only() -> None:
    records = [{"a": i} for i in range(5)]
    nd = await run(RecordStream(list(records), format="ndjson", end_record=True))
    assert ndjson(nd.body) == [*records, {"@end": {"records": 5}}]
    js = await run(RecordStream(list(records), format="json", end_record=True))
    assert json.loads(js.body) == [*records, {"@end": {"records": 5}}]
    empty = await run(RecordStream([], format="json", end_record=True))
    assert json.loads(empty.body) == [{"@end": {"records": 0}}]
    sv = await run(RecordStream(list(records), format="csv", end_record=True))
    assert sv.body == b"a\r\n0\r\n1\r\n2\r\n3\r\n4\r\n"


async def test_background_task_runs_after_a_complete_stream() -> None:
    ran: list[str] = []

    async def task() -> None:
        ran.append("done")

    await run(RecordStream(list(RECORDS), background=BackgroundTask(task)))
    assert ran == ["done"]


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError):
        RecordStream([], format="xml")
    with pytest.raises(ConfigurationError):
        RecordStream([], formats=["csv", "yaml"])
    with pytest.raises(ConfigurationError):
        RecordStream([], delimiter="\n")
    with pytest.raises(ConfigurationError):
        RecordStream([], formats=[])


# -- requests that get no stream


class ClosableSource:
    """A sync iterable that records whether it was iterated or closed."""

    def __init__(self) -> None:
        self.iterated = False
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, int]]:
        self.iterated = True
        yield {"a": 1}

    def close(self) -> None:
        self.closed = True


async def test_head_sends_headers_only_and_closes_the_source() -> None:
    source = aiterate(RECORDS)
    client = await run(RecordStream(source, filename="x"), http_scope("HEAD", accept="text/csv"))
    assert client.status == 200
    assert client.headers["content-type"] == "text/csv; charset=utf-8"
    assert client.headers["content-disposition"] == 'attachment; filename="x.csv"'
    assert [message["body"] for message in client.bodies] == [b""]
    assert client.complete
    assert source.ag_frame is None  # type: ignore[attr-defined]


async def test_head_closes_a_sync_source_without_iterating_it() -> None:
    source = ClosableSource()
    await run(RecordStream(source), http_scope("HEAD"))
    assert source.closed
    assert not source.iterated


async def test_not_acceptable_is_a_406_problem_listing_the_supported_types() -> None:
    source = ClosableSource()
    client = await run(RecordStream(source), http_scope(accept="image/png"))
    assert client.status == 406
    assert client.headers["content-type"] == "application/problem+json"
    problem = json.loads(client.body)
    assert problem["status"] == 406
    assert problem["title"] == "Not Acceptable"
    assert problem["supported"] == ALL_TYPES
    assert source.closed
    assert not source.iterated


async def test_not_acceptable_lists_only_the_formats_offered() -> None:
    client = await run(RecordStream([], formats=["csv", "json"]), http_scope(accept="application/x-ndjson"))
    assert json.loads(client.body)["supported"] == ["text/csv", "application/json"]


# -- chunks


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_fast_source_is_sent_in_few_large_chunks(kind: str) -> None:
    count = 100_000

    def sync_source() -> Iterator[dict[str, Any]]:
        for i in range(count):
            yield {"id": i, "name": "item"}

    async def async_source() -> AsyncIterator[dict[str, Any]]:
        for i in range(count):
            yield {"id": i, "name": "item"}

    stream = RecordStream(async_source() if kind == "async" else sync_source(), format="ndjson")
    client = await run(stream)
    body = client.body
    assert body.count(b"\n") == count
    assert ndjson(body[-100:].split(b"\n", 1)[1])[-1] == {"id": count - 1, "name": "item"}
    sizes = sorted(len(message["body"]) for message in client.bodies)
    target = 64 * 1024
    assert len(sizes) <= len(body) // target + 5
    assert sizes[len(sizes) // 2] >= target


async def test_first_records_go_out_at_once() -> None:
    client = Client()

    async def source() -> AsyncIterator[dict[str, int]]:
        yield {"a": 1}
        await anyio.sleep(0.5)
        yield {"a": 2}

    await run(RecordStream(source(), format="ndjson"), client=client)
    first = client.bodies[0]
    assert first["body"] == b'{"a":1}\n'
    assert client.times[client.messages.index(first)] - client.began < 0.3


async def test_slow_source_records_are_sent_within_the_latency_bound() -> None:
    yielded: dict[int, float] = {}

    async def source() -> AsyncIterator[dict[str, int]]:
        for i in range(5):
            await anyio.sleep(0.1)
            yielded[i] = time.monotonic()
            yield {"i": i}

    client = await run(RecordStream(source(), format="ndjson", max_latency=0.05))
    sent: dict[int, float] = {}
    for message, at in zip(client.messages, client.times, strict=True):
        if message["type"] == "http.response.body":
            for record in ndjson(message["body"]):
                sent[record["i"]] = at
    assert sorted(sent) == list(range(5))
    delays = [sent[i] - yielded[i] for i in range(5)]
    assert max(delays) < 0.25, delays


async def test_headers_of_a_slow_source_go_out_before_its_first_record() -> None:
    async def source() -> AsyncIterator[dict[str, int]]:
        await anyio.sleep(0.5)
        yield {"a": 1}

    client = await run(RecordStream(source(), format="ndjson", max_latency=0.05))
    assert client.times[0] - client.began < 0.3
    assert client.bodies[0]["body"] == b'{"a":1}\n'


# -- the client leaves


class Flags:
    def __init__(self) -> None:
        self.closed = threading.Event()


async def test_disconnect_under_backpressure_closes_an_async_source() -> None:
    flags = Flags()

    async def endless() -> AsyncIterator[dict[str, int]]:
        try:
            i = 0
            while True:
                yield {"i": i}
                i += 1
        finally:
            flags.closed.set()

    stream = RecordStream(endless(), format="ndjson")
    client = Client(disconnect_after=0.2, stall_after=3)
    began = time.monotonic()
    await run(stream, client=client)
    assert time.monotonic() - began < 1
    assert flags.closed.is_set()
    assert stream.outcome == "client left"
    assert len(client.bodies) == 3
    assert not client.complete


async def test_disconnect_under_backpressure_closes_a_sync_source() -> None:
    flags = Flags()

    def endless() -> Generator[dict[str, int]]:
        try:
            i = 0
            while True:
                yield {"i": i}
                i += 1
        finally:
            flags.closed.set()

    source = endless()
    stream = RecordStream(source, format="csv")
    began = time.monotonic()
    client = await run(stream, client=Client(disconnect_after=0.2, stall_after=2))
    assert time.monotonic() - began < 1
    assert flags.closed.is_set()
    assert inspect.getgeneratorstate(source) == inspect.GEN_CLOSED
    assert stream.outcome == "client left"
    assert not client.complete


async def test_disconnect_while_the_source_is_suspended_closes_it() -> None:
    flags = Flags()

    async def stuck() -> AsyncIterator[dict[str, int]]:
        try:
            yield {"i": 0}
            await anyio.sleep(3600)
            yield {"i": 1}
        finally:
            flags.closed.set()

    stream = RecordStream(stuck(), format="ndjson")
    began = time.monotonic()
    client = await run(stream, client=Client(disconnect_after=0.2))
    assert time.monotonic() - began < 1
    assert flags.closed.is_set()
    assert stream.outcome == "client left"
    assert client.body == b'{"i":0}\n'
    assert not client.complete


# -- failures


class Boom(Exception):
    pass


async def failing_after(count: int) -> AsyncIterator[dict[str, int]]:
    for i in range(count):
        yield {"i": i}
    # Long enough for the records before the failure to be sent on their own.
    await anyio.sleep(0.2)
    raise Boom("database went away")


def sync_failing_after(count: int) -> Iterator[dict[str, int]]:
    for i in range(count):
        yield {"i": i}
    time.sleep(0.2)
    raise Boom("database went away")


@pytest.mark.parametrize("make", [failing_after, sync_failing_after])
@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
async def test_failure_after_the_first_byte_aborts_the_stream(make: Any, fmt: str) -> None:
    stream = RecordStream(make(10), format=fmt, end_record=True)
    client = Client()
    with pytest.raises(StreamAborted) as caught:
        await run(stream, client=client)
    assert type(caught.value) is StreamAborted
    assert caught.value.index == 10
    assert isinstance(caught.value.__cause__, Boom)
    assert stream.outcome == "error"
    assert client.status == 200
    assert client.bodies
    assert all(message["more_body"] for message in client.bodies)
    assert b"@end" not in client.body
    if fmt == "ndjson":
        assert ndjson(client.body) == [{"i": i} for i in range(10)]
    elif fmt == "csv":
        assert client.body == b"i\r\n" + b"".join(b"%d\r\n" % i for i in range(10))
    else:
        assert client.body == b"[" + b",".join(b'{"i":%d}' % i for i in range(10))


async def test_encode_error_mid_stream_aborts_the_stream() -> None:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for i in range(10):
            yield {"i": i}
        await anyio.sleep(0.2)
        yield {"i": object()}

    stream = RecordStream(source(), format="ndjson")
    client = Client()
    with pytest.raises(StreamAborted) as caught:
        await run(stream, client=client)
    assert caught.value.index == 10
    assert isinstance(caught.value.__cause__, EncodeError)
    assert caught.value.__cause__.index == 10
    assert ndjson(client.body) == [{"i": i} for i in range(10)]
    assert not client.complete


async def test_failure_before_the_first_byte_is_a_500_problem() -> None:
    async def source() -> AsyncIterator[dict[str, int]]:
        raise Boom("no connection")
        yield {"i": 0}

    stream = RecordStream(source(), format="csv")
    client = await run(stream)
    assert client.status == 500
    assert client.headers["content-type"] == "application/problem+json"
    assert json.loads(client.body)["status"] == 500
    assert "no connection" not in client.body.decode()
    assert stream.outcome == "error"


async def test_http_error_before_the_first_byte_keeps_its_status() -> None:
    def source() -> Iterator[dict[str, int]]:
        raise NotFound("no such dataset")
        yield {"i": 0}

    client = await run(RecordStream(source(), format="ndjson"))
    assert client.status == 404
    assert json.loads(client.body)["detail"] == "no such dataset"


async def test_encode_error_in_the_first_batch_is_a_500_problem() -> None:
    client = await run(RecordStream([{"a": 1}, {"a": object()}], format="json"))
    assert client.status == 500


@pytest.mark.parametrize("stall_after", [0, 2])
async def test_send_timeout_cuts_a_client_that_stopped_reading(stall_after: int) -> None:
    flags = Flags()

    async def endless() -> AsyncIterator[dict[str, int]]:
        try:
            i = 0
            while True:
                yield {"i": i}
                i += 1
        finally:
            flags.closed.set()

    stream = RecordStream(endless(), format="ndjson", send_timeout=0.3)
    client = Client(stall_after=stall_after)
    began = time.monotonic()
    with pytest.raises(SendTimeout) as caught:
        await run(stream, client=client)
    assert 0.25 < time.monotonic() - began < 1.5
    assert stream.outcome == "send timeout"
    assert caught.value.index == stream.records_sent
    assert flags.closed.is_set()
    assert not client.complete


# -- through FastAPI


async def test_through_fastapi() -> None:
    app = fastapi.FastAPI()

    @app.get("/orders")
    async def orders(limit: int = 3) -> RecordStream:
        return RecordStream(aiterate(RECORDS[:limit]), filename="orders", end_record=True)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        default = await http.get("/orders")
        as_csv = await http.get("/orders", params={"limit": 2}, headers={"accept": "text/csv"})
        refused = await http.get("/orders", headers={"accept": "application/xml"})

    assert default.status_code == 200
    assert default.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert default.headers["content-disposition"] == 'attachment; filename="orders.ndjson"'
    assert ndjson(default.content) == [*RECORDS, {"@end": {"records": 3}}]
    assert as_csv.headers["content-disposition"] == 'attachment; filename="orders.csv"'
    assert list(csv.reader(io.StringIO(as_csv.text, newline=""))) == [
        ["id", "name", "price"],
        ["0", "item 0", "0.0"],
        ["1", "item 1", ""],
    ]
    assert refused.status_code == 406
    assert refused.json()["supported"] == ALL_TYPES
