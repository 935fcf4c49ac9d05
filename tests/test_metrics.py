"""``chute.metrics``: the middleware's numbers for each way a stream ends, SSE subscribers, multiprocess mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from chute import RecordStream, SendTimeout, StreamAborted
from chute import metrics as chute_metrics
from chute.metrics import StreamMetrics, count_subscriber, kind_of, multiprocess_folder
from chute.responses import EventStream
from tests.e2e.conftest import running_service

REDIS_URL = "redis://127.0.0.1:6379/0"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def responses(route: str, outcome: str, status: str = "200", kind: str = "records") -> float:
    return value("chute_responses_total", kind=kind, route=route, status=status, outcome=outcome)


def numbered(count: int | None) -> Iterator[dict[str, Any]]:
    i = 0
    while count is None or i < count:
        yield {"id": i, "name": f"row {i}"}
        i += 1


def failing_after(count: int) -> Iterator[dict[str, Any]]:
    yield from numbered(count)
    raise RuntimeError("the source broke")


def measured_app() -> StreamMetrics:
    app = FastAPI()

    @app.get("/rows/{count}", response_class=RecordStream)
    async def rows(count: int) -> RecordStream:
        return RecordStream(numbered(count), format="ndjson")

    @app.get("/endless", response_class=RecordStream)
    async def endless() -> RecordStream:
        return RecordStream(numbered(None), format="ndjson", chunk_size=1024, send_timeout=0.2)

    @app.get("/broken", response_class=RecordStream)
    async def broken() -> RecordStream:
        return RecordStream(failing_after(5000), format="ndjson", chunk_size=1024)

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"plain": "json"}

    return StreamMetrics(app)


def scope_of(path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def run(path: str, send: Send, receive: Receive | None = None) -> None:
    async def waiting() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    requested = False

    async def request_then(next_receive: Receive) -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await next_receive()

    with anyio.fail_after(10):
        await measured_app()(scope_of(path), lambda: request_then(receive or waiting), send)


@pytest.mark.anyio
async def test_a_complete_stream_counts_its_bytes_first_byte_and_outcome() -> None:
    before = {
        "bytes": value("chute_response_bytes_total", kind="records", route="/rows/{count}"),
        "complete": responses("/rows/{count}", "complete"),
        "first": value("chute_time_to_first_byte_seconds_count", kind="records"),
        "duration": value("chute_response_duration_seconds_count", kind="records"),
    }
    transport = httpx.ASGITransport(app=measured_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/rows/20000")
    assert response.status_code == 200
    assert len(response.content.splitlines()) == 20000
    sent = value("chute_response_bytes_total", kind="records", route="/rows/{count}") - before["bytes"]
    assert sent == len(response.content)
    assert responses("/rows/{count}", "complete") - before["complete"] == 1
    assert value("chute_time_to_first_byte_seconds_count", kind="records") - before["first"] == 1
    assert value("chute_response_duration_seconds_count", kind="records") - before["duration"] == 1
    assert value("chute_streams_active", kind="records") == 0


@pytest.mark.anyio
async def test_plain_and_unmatched_requests_are_other_with_a_bounded_route() -> None:
    before_plain = responses("/plain", "complete", kind="other")
    before_unmatched = responses("<unmatched>", "complete", status="404", kind="other")
    transport = httpx.ASGITransport(app=measured_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/plain")).status_code == 200
        for i in range(3):  # three raw paths, one label value
            assert (await client.get(f"/nothing/{i}")).status_code == 404
    assert responses("/plain", "complete", kind="other") - before_plain == 1
    assert responses("<unmatched>", "complete", status="404", kind="other") - before_unmatched == 3
    assert value("chute_streams_active", kind="other") == 0


@pytest.mark.anyio
async def test_a_client_that_leaves_is_counted_as_left_and_no_longer_active() -> None:
    before = responses("/endless", "client left")
    first_body = anyio.Event()
    active_while_streaming: list[float] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not first_body.is_set():
            active_while_streaming.append(value("chute_streams_active", kind="records"))
            first_body.set()

    async def leave() -> Message:
        await first_body.wait()
        return {"type": "http.disconnect"}

    await run("/endless", send, leave)
    assert active_while_streaming == [1.0]
    assert responses("/endless", "client left") - before == 1
    assert value("chute_streams_active", kind="records") == 0


@pytest.mark.anyio
async def test_a_client_that_stops_reading_is_a_send_timeout() -> None:
    before = responses("/endless", "send timeout")
    bodies = 0

    async def stalled(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies > 2:  # the client's buffers are full: the send never returns
                await anyio.sleep_forever()

    with pytest.raises(SendTimeout):
        await run("/endless", stalled)
    assert responses("/endless", "send timeout") - before == 1
    assert value("chute_streams_active", kind="records") == 0


@pytest.mark.anyio
async def test_a_source_that_fails_mid_body_is_an_error() -> None:
    before_error = responses("/broken", "error")
    before_complete = responses("/broken", "complete")
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    with pytest.raises(StreamAborted):
        await run("/broken", send)
    assert any(m.get("body") for m in messages)  # it failed after its first bytes
    assert responses("/broken", "error") - before_error == 1
    assert responses("/broken", "complete") == before_complete


async def run_raw(messages: list[Message], refuse_body: bool = False) -> None:
    """A bare ASGI app (no route: ``other``, ``<unmatched>``) sending ``messages`` through the middleware."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            for message in messages:
                await send(message)
        except OSError:
            pass  # as chute's responses do: the client is gone, there is no one to tell

    async def send(message: Message) -> None:
        if refuse_body and message["type"] == "http.response.body":
            raise OSError("the client left")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await StreamMetrics(app)(scope_of("/raw"), receive, send)


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1234")]}


@pytest.mark.anyio
async def test_a_send_refused_because_the_client_left_is_counted_as_left() -> None:
    before = responses("<unmatched>", "client left", kind="other")
    await run_raw([START, {"type": "http.response.body", "body": b"x" * 1234}], refuse_body=True)
    assert responses("<unmatched>", "client left", kind="other") - before == 1


@pytest.mark.anyio
async def test_a_file_the_server_sends_itself_counts_its_declared_length() -> None:
    before_bytes = value("chute_response_bytes_total", kind="other", route="<unmatched>")
    before = responses("<unmatched>", "complete", kind="other")
    await run_raw([START, {"type": "http.response.pathsend", "path": "/some/file"}])
    assert value("chute_response_bytes_total", kind="other", route="<unmatched>") - before_bytes == 1234
    assert responses("<unmatched>", "complete", kind="other") - before == 1


def test_kind_of_each_response_class() -> None:
    assert kind_of(RecordStream) == "records"
    assert kind_of(EventStream) == "events"
    assert kind_of(dict) == "other"
    assert kind_of(object()) == "other"  # FastAPI's placeholder when a route names no class


@pytest.mark.anyio
async def test_subscribers_are_counted_while_the_feed_is_iterated_and_closed_with_it() -> None:
    closed: list[str] = []

    async def subscription() -> AsyncGenerator[str, None]:
        try:
            while True:
                yield "event"
        finally:
            closed.append("source")

    topic = "metrics-test-topic"
    feed = count_subscriber(topic, subscription())
    assert value("chute_sse_subscribers", topic=topic) == 0  # nothing before the first iteration
    assert await feed.__anext__() == "event"
    assert value("chute_sse_subscribers", topic=topic) == 1
    await feed.aclose()
    assert value("chute_sse_subscribers", topic=topic) == 0
    assert closed == ["source"]


@pytest.mark.anyio
async def test_topics_past_the_cap_share_one_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chute_metrics, "MAX_TOPICS", 2)
    monkeypatch.setattr(chute_metrics, "_topics", set())

    async def subscription() -> AsyncGenerator[str, None]:
        while True:
            yield "event"

    feeds = [count_subscriber(f"capped-{i}", subscription()) for i in range(5)]
    for feed in feeds:
        await feed.__anext__()
    try:
        assert value("chute_sse_subscribers", topic="capped-0") == 1
        assert value("chute_sse_subscribers", topic="capped-1") == 1
        assert value("chute_sse_subscribers", topic="<other>") == 3
        assert value("chute_sse_subscribers", topic="capped-4") == 0
    finally:
        for feed in feeds:
            await feed.aclose()


def test_multiprocess_folder_is_made_for_the_block_unless_one_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(chute_metrics.MULTIPROC_DIR, raising=False)
    with multiprocess_folder() as folder:
        assert os.environ[chute_metrics.MULTIPROC_DIR] == folder
        assert Path(folder).is_dir()
    assert not Path(folder).exists()
    assert chute_metrics.MULTIPROC_DIR not in os.environ
    monkeypatch.setenv(chute_metrics.MULTIPROC_DIR, str(tmp_path))
    with multiprocess_folder() as folder:
        assert folder == str(tmp_path)
    assert tmp_path.is_dir()  # the owner's folder is left alone


WORKER = """
import sys
from chute import metrics
metrics.RESPONSES.labels("records", "/x", "200", "complete").inc(int(sys.argv[1]))
metrics.ACTIVE.labels("records").inc()
if sys.argv[2] == "stopping":
    metrics.release_process()
"""


def test_in_multiprocess_mode_the_exposition_adds_up_every_process(tmp_path: Path) -> None:
    environment = {**os.environ, chute_metrics.MULTIPROC_DIR: str(tmp_path)}
    # Three processes, one of which stops properly: its counts stay, its live gauge goes.
    for count, state in ((3, "running"), (4, "running"), (5, "stopping")):
        subprocess.run([sys.executable, "-c", WORKER, str(count), state], env=environment, check=True)
    shown = subprocess.run(
        [sys.executable, "-c", "import sys; from chute import metrics; sys.stdout.buffer.write(metrics.exposition())"],
        env=environment,
        check=True,
        capture_output=True,
    ).stdout.decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(shown)
        for sample in family.samples
    }
    labels = (("kind", "records"), ("outcome", "complete"), ("route", "/x"), ("status", "200"))
    assert samples[("chute_responses_total", labels)] == 12
    assert samples[("chute_streams_active", (("kind", "records"),))] == 2


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def counted_by_each_process(folder: Path, route: str) -> list[float]:
    """What each process's counter file holds for finished responses of ``route`` (prometheus-client's files)."""
    found = []
    for path in sorted(folder.glob("counter_*.db")):
        total = 0.0
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            name, _, labels, _ = json.loads(key)
            if name == "chute_responses" and labels.get("route") == route:
                total += count
        found.append(total)
    return found


@pytest.mark.e2e
def test_with_several_workers_every_scrape_covers_all_of_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    # A folder given to serve is used as it is, so the test can see what each worker counted.
    monkeypatch.setenv(chute_metrics.MULTIPROC_DIR, str(folder))
    listing = (("kind", "other"), ("outcome", "complete"), ("route", "/exports"), ("status", "200"))
    with running_service(data, "--broker", REDIS_URL, "--workers", "2") as service:
        made = 0
        while made < 400:
            # A new connection each time: the kernel hands each to either worker.
            assert httpx.get(f"{service.base_url}/exports").status_code == 200
            made += 1
            counts = counted_by_each_process(folder, "/exports")
            if made >= 10 and len(counts) == 2 and min(counts) > 0:
                break
        counts = counted_by_each_process(folder, "/exports")
        assert len(counts) == 2
        assert min(counts) > 0, f"one worker answered everything: {counts}"
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker's requests
            assert scrape(service.base_url)[("chute_responses_total", listing)] == made
