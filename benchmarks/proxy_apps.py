"""The proxy contenders: each relays ``GET /{name}`` to ``{upstream}/{name}`` and answers ``GET /healthz``.

- ``chute``: chute's ``ProxyStream`` with the shared client of :func:`chute.upstreams.upstream_client` (allowlist
  and address guard, the upstream allowlisted with ``allow_private`` as it is on loopback), on uvicorn with
  ``chute.protocol.HttpToolsProtocol`` as ``chute serve`` runs it;
- ``httpx``: the usual hand-written proxy, for reference: a Starlette ``StreamingResponse`` over a default
  ``httpx.AsyncClient``'s ``aiter_raw()``, on plain uvicorn (httptools);
- ``relay``: no HTTP at all, the ceiling of any proxy in Python on this machine: each accepted connection is piped
  byte for byte to a new upstream connection and back, by uvloop protocols with flow control (no parsing, no
  headers, one copy in and one out, as few wake-ups as the loop allows).

Run one as ``python -m benchmarks.proxy_apps CONTENDER PORT UPSTREAM``: uvloop, one worker, loopback, no access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.responses import Response

from benchmarks.apps import bare_app
from chute import ProxyStream, protocol
from chute.upstreams import Allowlist, Upstream, upstream_client


def _with_client(app: FastAPI, make: Callable[[], httpx.AsyncClient]) -> FastAPI:
    """``app`` with one shared client in ``app.state.client``, closed when the server stops."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with make() as client:
            app.state.client = client
            yield

    app.router.lifespan_context = lifespan
    return app


def chute_app(upstream: str) -> FastAPI:
    """``ProxyStream`` with its defaults (send deadline 60 s, 5 redirects) and the guarded shared client."""
    allowlist = Allowlist({"upstream": Upstream(upstream, allow_private=True)})
    app = _with_client(bare_app(), lambda: upstream_client(allowlist))

    @app.get("/{name}")
    async def relay(name: str, request: Request) -> Response:
        return ProxyStream(f"{upstream}/{name}", client=request.app.state.client)

    return app


def httpx_app(upstream: str) -> FastAPI:
    """What one writes by hand: stream the upstream with httpx and hand ``aiter_raw()`` to StreamingResponse."""
    app = _with_client(bare_app(), lambda: httpx.AsyncClient(timeout=30.0))

    @app.get("/{name}")
    async def relay(name: str, request: Request) -> Response:
        client: httpx.AsyncClient = request.app.state.client
        response = await client.send(client.build_request("GET", f"{upstream}/{name}"), stream=True)
        headers = {k: v for k, v in response.headers.items() if k in ("content-type", "content-length", "etag")}
        return StreamingResponse(
            response.aiter_raw(), response.status_code, headers, background=BackgroundTask(response.aclose)
        )

    return app


class _Pipe(asyncio.Protocol):
    """One side of a relayed connection: what arrives is written to ``peer``, reading paused while it is full."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)  # the upstream connection is not open yet
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def relay(port: int, upstream: str) -> None:
    """A byte pump on ``port`` to the upstream's host and port, on uvloop."""
    host, _, upstream_port = upstream.removeprefix("http://").partition(":")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        connecting: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

        def accepted() -> _Pipe:
            client = _Pipe()

            async def connect() -> None:
                _, server = await loop.create_connection(_Pipe, host, int(upstream_port))
                server.peer, client.peer = client, server
                for data in client.pending:
                    client.data_received(data)
                client.pending.clear()

            task = loop.create_task(connect())
            connecting.add(task)
            task.add_done_callback(connecting.discard)
            return client

        listener = await loop.create_server(accepted, "127.0.0.1", port)
        await listener.serve_forever()

    uvloop.run(serve())


APPS: dict[str, Callable[[str], FastAPI]] = {"chute": chute_app, "httpx": httpx_app}


def main(argv: Sequence[str]) -> None:
    if len(argv) != 3 or argv[0] not in (*APPS, "relay"):
        sys.exit(f"usage: python -m benchmarks.proxy_apps {{{','.join(APPS)},relay}} PORT UPSTREAM")
    name, port, upstream = argv[0], int(argv[1]), argv[2].rstrip("/")
    if name == "relay":
        relay(port, upstream)
        return
    uvicorn.run(
        APPS[name](upstream),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=protocol.HttpToolsProtocol if name == "chute" else "httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
