"""Fixtures every test folder shares: the anyio backend, and real uvicorn servers for any ASGI app."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Protocol

import pytest
import uvicorn
from starlette.types import ASGIApp


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServeApp(Protocol):
    def __call__(self, app: ASGIApp, http: type[asyncio.Protocol] | str = "httptools") -> str: ...


@pytest.fixture
def serve_app() -> Iterator[ServeApp]:
    """Serve an ASGI app on a real uvicorn (uvloop, httptools or another protocol) in a thread; its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: ASGIApp, http: type[asyncio.Protocol] | str = "httptools") -> str:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="uvloop", http=http, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
