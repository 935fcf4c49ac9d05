"""Live feeds on the reference service: publish, subscribe, replay with Last-Event-ID, heartbeats, auth."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PUBLISH_TOKEN, Service, running_service
from tests.sse import read_events

AUTH = {"authorization": f"Bearer {PUBLISH_TOKEN}"}


def publish(service: Service, topic: str, data: str, event: str | None = None) -> str:
    params = {"event": event} if event else {}
    response = httpx.post(f"{service.base_url}/events/{topic}", content=data.encode(), params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    event_id: str = response.json()["id"]
    return event_id


def test_a_subscriber_gets_live_events(service: Service) -> None:
    def publish_soon() -> None:
        time.sleep(0.3)
        publish(service, "live", "hello\nworld", event="greeting")

    threading.Thread(target=publish_soon).start()
    events = read_events(f"{service.base_url}/events/live", 1)
    assert [(e.event, e.data) for e in events] == [("greeting", "hello\nworld")]


def test_a_reconnecting_client_gets_what_it_missed(service: Service) -> None:
    ids = [publish(service, "replay", f"event {i}") for i in range(5)]
    events = read_events(f"{service.base_url}/events/replay", 3, headers={"last-event-id": ids[1]})
    assert [e.data for e in events] == ["event 2", "event 3", "event 4"]
    assert [e.id for e in events] == ids[2:]


def test_headers_and_heartbeats(service: Service) -> None:
    with httpx.stream("GET", f"{service.base_url}/events/quiet", timeout=5) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
    comments: list[str] = []
    assert read_events(f"{service.base_url}/events/quiet", 1, within=1.5, comments=comments) == []
    assert comments  # the service's heartbeat is 0.5 s in these tests


@pytest.mark.parametrize("bad", ["abc", "-1", "9" * 100])
def test_a_malformed_last_event_id_is_a_400(service: Service, bad: str) -> None:
    response = httpx.get(f"{service.base_url}/events/t", headers={"last-event-id": bad})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Basic abc"}, 401), ({"authorization": "Bearer wrong"}, 403)],
)
def test_publishing_needs_the_token(service: Service, headers: dict[str, str], status: int) -> None:
    response = httpx.post(f"{service.base_url}/events/t", content=b"x", headers=headers)
    assert response.status_code == status


def test_a_topic_name_is_validated(service: Service) -> None:
    assert httpx.post(f"{service.base_url}/events/a%20b", content=b"x", headers=AUTH).status_code == 422


IDENTITY = {"accept-encoding": "identity"}  # the bytes logged are those on the wire: uncompressed, for this test


def test_the_log_feed_shows_finished_requests(service: Service) -> None:
    def request_soon() -> None:
        time.sleep(0.3)
        httpx.get(f"{service.base_url}/stream-json-lines?rows=3", headers=IDENTITY)

    threading.Thread(target=request_soon).start()
    found = None
    for event in read_events(f"{service.base_url}/stream-logs", 50, within=5):
        record = json.loads(event.data)
        if event.event == "request" and record["path"] == "/stream-json-lines":
            found = record
            break
    assert found is not None
    assert (found["method"], found["status"], found["outcome"]) == ("GET", 200, "complete")
    assert found["bytes"] == len(httpx.get(f"{service.base_url}/stream-json-lines?rows=3", headers=IDENTITY).content)
    assert found["duration_ms"] > 0


def test_the_log_topic_cannot_be_published_to(service: Service) -> None:
    assert httpx.post(f"{service.base_url}/events/service.logs", content=b"x", headers=AUTH).status_code == 403


def test_stopping_the_server_ends_open_feeds_with_a_retry_hint(tmp_path: Path) -> None:
    """Ctrl-C with open feeds: each gets a last comment and retry hint and a clean end, and the server exits."""
    endings: list[bytes] = []
    errors: list[Exception] = []
    with running_service(tmp_path) as running:
        opened = threading.Barrier(4)

        def follow() -> None:
            received = bytearray()
            try:
                with httpx.stream("GET", f"{running.base_url}/events/stopping", timeout=10) as response:
                    chunks = response.iter_raw()
                    received.extend(next(chunks))
                    opened.wait(5)
                    for chunk in chunks:
                        received.extend(chunk)
            except Exception as exc:  # an abort instead of a clean end fails the test below
                errors.append(exc)
            endings.append(bytes(received))

        readers = [threading.Thread(target=follow) for _ in range(3)]
        for reader in readers:
            reader.start()
        opened.wait(5)
        started = time.monotonic()
        running.process.send_signal(signal.SIGINT)
        running.process.wait(10)
        stopped_in = time.monotonic() - started
        for reader in readers:
            reader.join(5)
    assert errors == []
    assert len(endings) == 3
    assert all(ending.endswith(b":the server is stopping\n\nretry: 1000\n\n") for ending in endings), endings
    assert stopped_in < 3.0
    assert running.process.returncode == 0


def test_several_workers_need_a_shared_broker(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chute", "serve", "--data", str(tmp_path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "shared event log" in result.stderr
