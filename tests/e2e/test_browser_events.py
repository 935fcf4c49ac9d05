"""A real browser's EventSource (Debian's chromium, driven by Playwright) against ``chute serve``: it receives
events, reconnects after the server restarts, and gets what it missed meanwhile through ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from chute.brokers.redis import RedisBroker
from tests.conftest import free_port
from tests.e2e.conftest import PUBLISH_TOKEN, running_service

REDIS_URL = "redis://127.0.0.1:6379/0"
CHROMIUM = Path("/usr/bin/chromium")
# As root and on a machine with no internet: no sandbox, and none of the background traffic that would fail.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

LISTEN = """(topic) => {
    window.received = [];
    window.opened = 0;
    window.errors = 0;
    const source = new EventSource(`/events/${topic}`);
    source.onopen = () => { window.opened += 1; };
    source.onerror = () => { window.errors += 1; };
    source.onmessage = (event) => { window.received.push([event.lastEventId, event.data]); };
    window.source = source;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: ./scripts/install installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def publish(base_url: str, topic: str, data: str) -> None:
    response = httpx.post(
        f"{base_url}/events/{topic}", content=data, headers={"authorization": f"Bearer {PUBLISH_TOKEN}"}
    )
    assert response.status_code == 200, response.text


def received(page: Page, count: int, within: float = 15.0) -> list[list[str]]:
    page.wait_for_function(f"window.received.length >= {count}", timeout=within * 1000)
    result: Any = page.evaluate("window.received")
    return list(result)


def test_eventsource_resumes_after_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    topic = f"browser-{uuid.uuid4().hex}"
    port = free_port()
    flags = ("--broker", REDIS_URL)
    page = browser.new_page()
    try:
        with running_service(tmp_path, *flags, port=port) as first:
            page.goto(f"{first.base_url}/healthz")
            page.evaluate(LISTEN, topic)
            page.wait_for_function("window.opened === 1", timeout=10_000)
            for i in range(3):
                publish(first.base_url, topic, f"before {i}")
            assert [data for _, data in received(page, 3)] == ["before 0", "before 1", "before 2"]
            first.process.send_signal(signal.SIGINT)  # the feed ends with a retry hint; the browser reconnects
            first.process.wait(10)

        async def publish_while_down() -> None:
            broker = RedisBroker(REDIS_URL)
            try:
                for i in range(3):
                    await broker.publish(topic, f"while down {i}")
            finally:
                await broker.aclose()

        off_the_loop(publish_while_down)
        time.sleep(1.5)  # the browser retries (and fails) against the stopped server meanwhile
        with running_service(tmp_path, *flags, port=port) as second:
            events = received(page, 6)
            publish(second.base_url, topic, "after")
            events = received(page, 7)
        ids = [event_id for event_id, _ in events]
        assert [data for _, data in events] == [
            *(f"before {i}" for i in range(3)),
            *(f"while down {i}" for i in range(3)),
            "after",
        ]
        assert len(set(ids)) == 7
        assert page.evaluate("window.opened") >= 2
    finally:
        page.close()
        off_the_loop(lambda: _delete(topic))


def off_the_loop(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run async work from this test: Playwright's sync API holds an event loop in this thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        executor.submit(asyncio.run, work()).result()


async def _delete(topic: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.delete(f"chute:events:{topic}")
    finally:
        await client.aclose()
