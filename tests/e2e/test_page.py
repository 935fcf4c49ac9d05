"""The service's web page in a real browser (Debian's chromium, driven by Playwright) against ``chute serve``: it
loads cleanly, its export completes with the listed row count, it lists the files, shows the metrics, and its
live log shows requests and comes back by itself after the server restarts."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import free_port
from tests.e2e.conftest import Service, running_service
from tests.e2e.test_browser_events import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: ./scripts/install installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def number(page: Page, element_id: str) -> float:
    found = page.get_attribute(f"#{element_id}", "data-value")
    assert found is not None, f"#{element_id} shows no number"
    return float(found)


def wait_for(page: Page, condition: str, within: float = 15.0) -> None:
    page.wait_for_function(condition, timeout=within * 1000)


def test_the_page_shows_every_stream_at_work_and_recovers_from_a_restart(browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    # Playwright evaluates its conditions as strings, which the page's policy (rightly) forbids to scripts.
    page = browser.new_page(bypass_csp=True)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", console)
    try:
        with running_service(tmp_path, port=port) as first:
            datasets = {d["name"]: d for d in httpx.get(f"{first.base_url}/exports").json()}
            files = httpx.get(f"{first.base_url}/files/").json()
            page.goto(f"{first.base_url}/")
            assert page.title().startswith("chute")

            # The export: NDJSON parsed as it arrives, counted against the listing.
            wait_for(page, "document.querySelectorAll('#export-dataset option').length > 0")
            page.select_option("#export-dataset", "orders")
            page.click("#export-start")
            wait_for(page, "['done', 'failed'].includes(document.getElementById('export-state').dataset.state)", 30)
            state = page.get_attribute("#export-state", "data-state")
            assert state == "done", page.text_content("#export-state")
            rows = datasets["orders"]["rows"]
            assert rows > 0
            assert number(page, "export-rows") == rows
            assert number(page, "export-total") == rows
            assert page.eval_on_selector("#export-progress", "bar => bar.value === bar.max")
            assert number(page, "export-rate") > 0

            # The live log: open, and the export's request among its lines.
            wait_for(page, "document.getElementById('feed-status').dataset.state === 'open'")
            wait_for(
                page,
                "[...document.querySelectorAll('#feed-list li')].some(li => li.textContent.includes("
                "'GET /exports/orders 200'))",
            )

            # The downloads: every listed file, linked, with its size.
            links = page.eval_on_selector_all("#files-list a", "links => links.map(a => a.getAttribute('href'))")
            assert links == [f["url"] for f in files]
            sizes = page.eval_on_selector_all("#files-list .size", "spans => spans.map(s => Number(s.dataset.value))")
            assert sizes == [f["size"] for f in files]

            # The metrics: polled, with this page's export and its own feed in them.
            wait_for(page, "Number(document.getElementById('metric-subscribers').dataset.value) >= 1")
            wait_for(page, "Number(document.getElementById('metric-responses').dataset.value) >= 3")
            assert number(page, "metric-bytes") > 0
            assert problems == []

            first.process.send_signal(signal.SIGINT)  # feeds end with a retry hint; the page reconnects
            first.process.wait(10)
            wait_for(page, "document.getElementById('feed-status').dataset.state !== 'open'")

        with running_service(tmp_path, port=port) as second:
            wait_for(page, "document.getElementById('feed-status').dataset.state === 'open'", 30)
            assert number(page, "feed-reconnects") >= 1
            marker = f"/after-restart-{uuid.uuid4().hex}"
            assert httpx.get(f"{second.base_url}{marker}").status_code == 404
            wait_for(
                page, f"[...document.querySelectorAll('#feed-list li')].some(li => li.textContent.includes('{marker}'))"
            )
    finally:
        page.close()


def test_the_page_files_are_revalidated_not_refetched(service: Service) -> None:
    for path in ("/", "/page/page.js", "/page/page.css"):
        response = httpx.get(f"{service.base_url}{path}")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        again = httpx.get(f"{service.base_url}{path}", headers={"if-none-match": response.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
    assert httpx.get(f"{service.base_url}/page/other.js").status_code == 422
