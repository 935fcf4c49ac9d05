"""Live feeds on the reference service: publish, subscribe, replay with Last-Event-ID, heartbeats, auth."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.conftest import PUBLISH_TOKEN, Service
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
