"""chute's HTTP protocol for uvicorn: what long responses need and uvicorn does not give an ASGI app.

- Zero-copy file bodies: the ASGI ``http.response.zerocopysend`` extension (see :mod:`chute.zerocopy`).
- Zero-copy proxied bodies: chute's ``chute.response.splice`` extension moves bytes from an upstream socket to
  the client's in the kernel (:func:`chute.zerocopy.splice_all`; Linux only).
- A client cut at the send deadline releases its socket at once. uvicorn closes the transport of a response
  whose app failed after the headers, and a close waits until the write buffer drains: behind a client that
  stopped reading, that is forever, with the socket and its buffers held. Here a
  :class:`~chute.exceptions.SendTimeout` resets the connection instead (``SO_LINGER`` 0, then abort). Other
  failures after the headers keep uvicorn's close, which a reading client sees as an incomplete body.
- Graceful shutdown of live feeds: when the server stops it asks every connection to shut down; the first one
  asked tells every open :class:`~chute.responses.events.EventStream` to end with a retry hint
  (:func:`~chute.responses.events.close_feeds`), so ``Ctrl-C`` never waits on feeds that never end.
- Detached live feeds: chute's ``chute.response.feed`` extension (:mod:`chute.feeds`). A caught-up
  ``EventStream`` hands its connection over to the event loop's feed hub: the response is neither finished nor
  followed by a next request (what the client sends is ignored), the transport stays open, and the cycle, scope
  and request task are let go. ``connection_lost`` then goes to the hub's subscriber.

Use it with ``uvicorn.run(app, http=chute.protocol.HttpToolsProtocol)``; ``chute serve`` does. The cycle class
is swapped in during ``on_headers_complete``, the one seam uvicorn offers, so this module follows uvicorn's
internals; the tests pin the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio.to_thread
from uvicorn.protocols.http import httptools_impl

from chute import feeds, zerocopy
from chute.exceptions import SendTimeout
from chute.responses.events import close_feeds

logger = logging.getLogger("chute")


class RequestResponseCycle(httptools_impl.RequestResponseCycle):
    protocol: HttpToolsProtocol | None = None  # set by the protocol that made it
    encoded = False  # the response has a Content-Encoding: its body is not the app's bytes

    async def run_asgi(self, app: Any) -> None:
        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except SendTimeout:  # logged where it happened; the reset is the whole answer
                self.reset()

        await super().run_asgi(guarded)

    def reset(self) -> None:
        """End the connection now, unsent bytes dropped, with a reset the client cannot mistake for an end."""
        self.disconnected = True  # uvicorn must not also report the response as incomplete
        with contextlib.suppress(OSError):
            connection = self.transport.get_extra_info("socket")
            if connection is not None:
                zerocopy.reset_on_close(connection.fileno())
        self.transport.abort()

    def detach(self, message: dict[str, Any]) -> None:
        """Hand the connection to the feed hub (``message["accepted"]`` says whether it took it)."""
        if not self.response_started or self.response_complete or self.disconnected or self.protocol is None:
            return
        if self.scope["method"] == "HEAD" or self.chunked_encoding is None or not self.keep_alive or self.encoded:
            # A body the hub cannot frame or encode (a middleware compresses it), or a connection uvicorn means
            # to close (shutdown under way): the feed stays on the ASGI path.
            return
        handover: feeds.Handover = message["feed"]
        subscriber = handover.attach(self.transport, chunked=self.chunked_encoding)
        if subscriber is None:
            return
        message["accepted"] = True
        # uvicorn must neither end the response nor report it unfinished when the app returns; on_response is
        # not called, so no keep-alive timer starts and the next request is never read.
        self.response_complete = True
        self.protocol.detached(subscriber)
        self.protocol = None

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == feeds.EXTENSION:
            self.detach(message)
            return
        if kind == "http.response.start":
            self.encoded = any(name.lower() == b"content-encoding" for name, _ in message.get("headers", ()))
        if kind not in (zerocopy.EXTENSION, zerocopy.SPLICE_EXTENSION):
            await super().send(message)
            return
        if not self.response_started or self.response_complete or self.chunked_encoding:
            raise RuntimeError(f"{kind} needs a started response with a Content-Length")
        count = int(message["count"])
        if count > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        # The socket is written directly: whatever the transport still holds (the headers) must leave first.
        # uvicorn's flow control signals only crossing the high-water mark, so the last bytes are polled for.
        while self.transport.get_write_buffer_size() and not self.disconnected:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        if self.disconnected:
            return
        connection = self.transport.get_extra_info("socket")
        timeout = float(message.get("timeout", zerocopy.DEFAULT_TIMEOUT))
        if self.scope["method"] != "HEAD" and count and kind == zerocopy.SPLICE_EXTENSION:
            read_timeout = message.get("read_timeout")
            await zerocopy.splice_all(
                message["source"].fileno(),
                connection.fileno(),
                count,
                send_timeout=timeout,
                read_timeout=None if read_timeout is None else float(read_timeout),
            )
        elif self.scope["method"] != "HEAD" and count:
            await anyio.to_thread.run_sync(
                zerocopy.sendfile_all,
                connection.fileno(),
                message["file"].fileno(),
                int(message["offset"]),
                count,
                timeout,
                limiter=zerocopy.THREADS,
            )
        self.expected_content_length -= count
        if not message.get("more_body", False):
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools protocol with chute's additions (module docstring)."""

    subscriber: feeds.Subscriber | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {zerocopy.EXTENSION: {}, feeds.EXTENSION: {}}
        if zerocopy.splice_available():
            self.scope["extensions"][zerocopy.SPLICE_EXTENSION] = {}

    def on_headers_complete(self) -> None:
        # uvicorn builds the cycle inside this callback from the module's class; swapping the class for the
        # duration of the call is the one seam it offers (the event loop runs one callback at a time).
        original = httptools_impl.RequestResponseCycle
        httptools_impl.RequestResponseCycle = RequestResponseCycle  # type: ignore[misc]
        try:
            super().on_headers_complete()
        finally:
            httptools_impl.RequestResponseCycle = original  # type: ignore[misc]
        if isinstance(self.cycle, RequestResponseCycle):
            self.cycle.protocol = self

    def detached(self, subscriber: feeds.Subscriber) -> None:
        """The connection now belongs to the feed hub: keep the transport, let the request's objects go."""
        self.subscriber = subscriber
        self.cycle = None  # type: ignore[assignment]
        self.scope = {}  # type: ignore[typeddict-item]
        self.headers = []
        self.flow.resume_reading()  # reading is how a client that leaves is noticed

    def data_received(self, data: bytes) -> None:
        if self.subscriber is not None:
            return  # an SSE client sends nothing more on this connection; no next request is served on it
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.subscriber is not None:
            self.subscriber.lost()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # Called on the event loop for every open connection when the server stops; ending the feeds lets their
        # connections finish like any other response.
        close_feeds()
        super().shutdown()
