"""chute's uvicorn protocol: a client cut at the send deadline has its socket released at once, not drained."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import psutil
import pytest
from fastapi import FastAPI
from starlette.responses import Response

from chute import EventStream, RecordStream, protocol
from tests.conftest import ServeApp

BIG = "x" * 65536


async def flood() -> AsyncIterator[str]:
    while True:
        yield BIG


def records() -> Iterator[dict[str, str]]:
    while True:
        yield {"data": BIG}


RESPONSES: dict[str, Callable[[], Response]] = {
    "feed": lambda: EventStream(flood(), send_timeout=1.0),
    "export": lambda: RecordStream(records(), format="ndjson", send_timeout=1.0),
}


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether this process still holds the server's end of the connection from ``client_port``."""
    return any(
        c.laddr and c.raddr and c.laddr.port == server_port and c.raddr.port == client_port
        for c in psutil.Process().net_connections(kind="tcp")
    )


def drain(client: socket.socket) -> None:
    while client.recv(1 << 20):
        pass


@pytest.mark.parametrize("kind", sorted(RESPONSES))
def test_a_stalled_client_is_reset_and_its_socket_released(serve_app: ServeApp, kind: str) -> None:
    app = FastAPI()
    app.add_api_route("/stream", RESPONSES[kind])
    server_port = urlsplit(serve_app(app, protocol.HttpToolsProtocol)).port
    assert server_port is not None
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: the client reads nothing
        client.connect(("127.0.0.1", server_port))
        client_port = client.getsockname()[1]
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        deadline = time.monotonic() + 2
        while not server_side_open(server_port, client_port) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the server has accepted it
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            assert server_side_open(server_port, client_port)  # held while within the send deadline
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while server_side_open(server_port, client_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server_side_open(server_port, client_port)
        client.settimeout(5)
        with pytest.raises(ConnectionResetError):
            drain(client)  # what was buffered, then the reset: never a clean end
