"""``chute tail URL``: prints a feed's events across reconnections, as a subprocess and in-process."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from chute import EventStream
from chute.cli import app
from chute.encoders.sse import Event
from tests.conftest import ServeApp
from tests.sse import NumberedFeed

runner = CliRunner()
CHUTE = [sys.executable, "-m", "chute"]


def app_of(body: str, *, status: int = 200, media_type: str = "text/event-stream") -> Starlette:
    """``body`` on the first request, 204 on the next ones."""
    visits: list[int] = []

    async def endpoint(request: Request) -> Response:
        visits.append(1)
        if len(visits) > 1:
            return Response(status_code=204)
        if status != 200:
            return JSONResponse({"detail": body}, status_code=status, media_type="application/problem+json")
        return Response(body, media_type=media_type)

    return Starlette(routes=[Route("/feed", endpoint)])


def test_json_lines_across_reconnections_until_204(serve_app: ServeApp) -> None:
    feed = NumberedFeed(5, per_connection=3)
    completed = subprocess.run(
        [*CHUTE, "tail", f"{serve_app(feed.app)}/feed", "--json"], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert lines == [{"event": "message", "id": str(n), "data": f"event {n}"} for n in range(1, 6)]
    assert [visit.last_event_id for visit in feed.visits] == [None, "3", "5"]
    assert "reconnecting" in completed.stderr
    assert "204" in completed.stderr


def test_readable_output_shows_type_id_and_data(serve_app: ServeApp) -> None:
    body = "retry: 10\nid: 7\nevent: greeting\ndata: hello\ndata: world\n\ndata: no id change\n\n"
    result = runner.invoke(app, ["tail", f"{serve_app(app_of(body))}/feed"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["greeting  id 7", "  hello", "  world", "message  id 7", "  no id change"]


def test_control_characters_from_the_server_are_shown_not_obeyed(serve_app: ServeApp) -> None:
    body = "retry: 10\nevent: \x1b]0;pwned\x07\ndata: \x1b[31mred\x9b\n\n"
    result = runner.invoke(app, ["tail", f"{serve_app(app_of(body))}/feed"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "\x9b" not in result.stdout
    assert "\\x1b[31mred\\x9b" in result.stdout
    result = runner.invoke(app, ["tail", f"{serve_app(app_of(body))}/feed", "--json"])
    assert "\x1b" not in result.stdout
    assert "\x9b" not in result.stdout
    assert json.loads(result.stdout)["data"] == "\x1b[31mred\x9b"


def test_the_last_event_id_option_is_sent(serve_app: ServeApp) -> None:
    feed = NumberedFeed(5, per_connection=5)
    result = runner.invoke(app, ["tail", f"{serve_app(feed.app)}/feed", "--json", "--last-event-id", "3"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["4", "5"]
    assert feed.visits[0].last_event_id == "3"


@pytest.mark.parametrize(
    ("status", "media_type", "expected"),
    [
        (404, "", "404 Not Found: no such topic"),
        (200, "text/plain", "Content-Type text/plain; charset=utf-8, not text/event-stream"),
    ],
)
def test_errors_exit_1_with_a_clear_message(serve_app: ServeApp, status: int, media_type: str, expected: str) -> None:
    served = app_of("no such topic", status=status, media_type=media_type or "text/event-stream")
    result = runner.invoke(app, ["tail", f"{serve_app(served)}/feed"])
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert expected in result.stderr
    assert result.stdout == ""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_exits_130(serve_app: ServeApp) -> None:
    async def idle() -> AsyncIterator[Event]:
        yield Event(data="first", id="1")
        await anyio.sleep(3600)

    async def endpoint(request: Request) -> Response:
        return EventStream(idle(), heartbeat=3600)

    url = f"{serve_app(Starlette(routes=[Route('/feed', endpoint)]))}/feed"
    process = subprocess.Popen([*CHUTE, "tail", url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30), "no event printed"
        assert json.loads(process.stdout.readline())["data"] == "first"
        time.sleep(0.1)  # inside the event loop, waiting for the next event
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert b"interrupted" in stderr
    assert b"Traceback" not in stderr


@pytest.mark.skipif(not hasattr(os, "pipe"), reason="needs pipes")
def test_a_reader_that_leaves_ends_tail_quietly(serve_app: ServeApp) -> None:
    feed = NumberedFeed(50_000, per_connection=50_000)
    read, write = os.pipe()
    process = subprocess.Popen(
        [*CHUTE, "tail", f"{serve_app(feed.app)}/feed", "--json"], stdout=write, stderr=subprocess.PIPE
    )
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        assert reader.readline()  # one line, then the reader goes away
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr
