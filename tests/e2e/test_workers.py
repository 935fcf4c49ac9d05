"""Live feeds across processes sharing the Redis event log: 2 uvicorn workers of one server, and two servers."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import httpx

from chute.encoders.sse import Event
from tests.e2e.conftest import PUBLISH_TOKEN, running_service
from tests.sse import read_events

REDIS_URL = "redis://127.0.0.1:6379/0"
AUTH = {"authorization": f"Bearer {PUBLISH_TOKEN}"}


def publish(base_url: str, topic: str, data: str) -> str:
    # A new connection each time: the kernel hands each one to either worker.
    response = httpx.post(f"{base_url}/events/{topic}", content=data, headers=AUTH)
    assert response.status_code == 200, response.text
    event_id: str = response.json()["id"]
    return event_id


def subscribe_in_background(
    url: str, after: str, until: str, into: list[list[Event]], ready: threading.Barrier
) -> None:
    """Follow ``url`` from the event ``after`` (so nothing published once the barrier passes can be missed) up to
    the event whose data is ``until``."""

    def follow() -> None:
        events: list[Event] = []
        into.append(events)
        with httpx.stream("GET", url, headers={"last-event-id": after}, timeout=20) as response:
            ready.wait(10)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(Event(data=line.removeprefix("data: ")))
                    if events[-1].data == until:
                        return

    threading.Thread(target=follow, daemon=True).start()


def test_two_workers_share_one_log(tmp_path: Path) -> None:
    topic = f"workers-{uuid.uuid4().hex}"
    with running_service(tmp_path, "--broker", REDIS_URL, "--workers", "2") as service:
        publishers: set[int] = set()
        subscribers: list[list[Event]] = []
        ready = threading.Barrier(9)
        start = publish(service.base_url, topic, "start")
        for _ in range(8):
            subscribe_in_background(f"{service.base_url}/events/{topic}", start, "end", subscribers, ready)
        ready.wait(10)
        # The log feed (also shared) tells which worker answered each publish; go on until both have.
        following = threading.Event()
        logs = threading.Thread(
            target=lambda: publishers.update(publishing_workers(service.base_url, topic, following))
        )
        logs.start()
        assert following.wait(10)
        sent: list[str] = []
        while len(sent) < 40 or (logs.is_alive() and len(sent) < 400):
            sent.append(publish(service.base_url, topic, f"event {len(sent)}"))
        sent.append(publish(service.base_url, topic, "end"))
        logs.join(10)
        for _ in range(100):
            if all(events and events[-1].data == "end" for events in subscribers):
                break
            threading.Event().wait(0.1)
    assert len(publishers) == 2, "every publish went to one worker: nothing crossed"
    assert len(set(sent)) == len(sent)
    expected = [f"event {i}" for i in range(len(sent) - 1)] + ["end"]
    assert len(subscribers) == 8
    for events in subscribers:
        assert [e.data for e in events] == expected


def publishing_workers(base_url: str, topic: str, following: threading.Event) -> set[int]:
    pids: set[int] = set()
    with httpx.stream("GET", f"{base_url}/stream-logs", timeout=15) as response:
        following.set()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                record = json.loads(line.removeprefix("data: "))
                if record.get("method") == "POST" and record.get("path") == f"/events/{topic}":
                    pids.add(record["pid"])
                    if len(pids) == 2:
                        break
    return pids


def test_a_client_on_one_server_sees_what_was_published_through_another(tmp_path: Path) -> None:
    topic = f"hosts-{uuid.uuid4().hex}"
    flags = ("--broker", REDIS_URL)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_service(tmp_path / "a", *flags) as a,
        running_service(tmp_path / "b", *flags) as b,
    ):
        first = publish(b.base_url, topic, "one")
        second = publish(b.base_url, topic, "two")
        replayed = read_events(f"{a.base_url}/events/{topic}", 1, headers={"last-event-id": first})
        assert [(e.id, e.data) for e in replayed] == [(second, "two")]
        live: list[list[Event]] = []
        ready = threading.Barrier(2)
        subscribe_in_background(f"{a.base_url}/events/{topic}", second, "three", live, ready)
        ready.wait(10)
        publish(b.base_url, topic, "three")
        for _ in range(100):
            if live and live[0]:
                break
            threading.Event().wait(0.05)
        assert [e.data for e in live[0]] == ["three"]
