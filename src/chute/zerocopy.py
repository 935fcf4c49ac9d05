"""Zero-copy file bodies on uvicorn: the ASGI ``http.response.zerocopysend`` extension, answered with sendfile.

An ASGI app otherwise copies every byte of a file twice (into Python, then into the socket); nginx's
``sendfile`` copies once, in the kernel. uvicorn offers no such extension, and uvloop refuses to watch a socket its
transport owns, so :class:`HttpToolsProtocol` here adds it: the cycle waits until the transport has written
everything queued before (the headers), then a worker thread runs ``os.sendfile`` on the socket, waiting with
``select`` whenever the socket is full and giving up after ``timeout`` seconds without progress (the send
deadline; the connection is then reset, not drained). The event loop never blocks; a client that leaves makes
``sendfile`` fail at once.

Message keys (the ASGI "Zero Copy Send" extension): ``file`` (an object with ``fileno()``), ``offset``,
``count``, ``more_body``; chute adds ``timeout``. A file that ends before ``count`` bytes raises
:class:`EOFError` in the app, which then aborts the response.

Use it with ``uvicorn.run(app, http=chute.zerocopy.HttpToolsProtocol)``; ``chute serve`` does.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
from typing import Any

import anyio
import anyio.to_thread
from uvicorn.protocols.http import httptools_impl

EXTENSION = "http.response.zerocopysend"
DEFAULT_TIMEOUT = 60.0
# One thread per body in flight: a transfer may wait on a slow client, and must not queue behind 40 others
# (anyio's default limit) while its client waits for bytes.
_THREADS = anyio.CapacityLimiter(1024)


def sendfile_all(socket_fd: int, file_fd: int, offset: int, count: int, timeout: float) -> None:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` to the non-blocking socket; runs in a worker thread."""
    while count > 0:
        try:
            sent = os.sendfile(socket_fd, file_fd, offset, count)
        except BlockingIOError:
            _, writable, _ = select.select([], [socket_fd], [], timeout)
            if not writable:
                reset_on_close(socket_fd)
                raise TimeoutError(f"the client read nothing for {timeout} s") from None
            continue
        if sent == 0:
            raise EOFError(f"the file ended {count} bytes early")
        offset += sent
        count -= sent


def reset_on_close(socket_fd: int) -> None:
    """Make the coming close reset the connection (``SO_LINGER`` 0) instead of draining megabytes that a stalled
    client may take minutes to read: the socket and its kernel buffers are released at once."""
    with socket.socket(fileno=os.dup(socket_fd)) as dup:  # options belong to the socket, shared by both fds
        dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class RequestResponseCycle(httptools_impl.RequestResponseCycle):
    async def send(self, message: Any) -> None:
        if message["type"] != EXTENSION:
            await super().send(message)
            return
        if not self.response_started or self.response_complete or self.chunked_encoding:
            raise RuntimeError(f"{EXTENSION} needs a started response with a Content-Length")
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
        timeout = float(message.get("timeout", DEFAULT_TIMEOUT))
        if self.scope["method"] != "HEAD" and count:
            await anyio.to_thread.run_sync(
                sendfile_all,
                connection.fileno(),
                message["file"].fileno(),
                int(message["offset"]),
                count,
                timeout,
                limiter=_THREADS,
            )
        self.expected_content_length -= count
        if not message.get("more_body", False):
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools protocol, with the zero-copy send extension in every HTTP scope."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {EXTENSION: {}}

    def on_headers_complete(self) -> None:
        # uvicorn builds the cycle inside this callback from the module's class; swapping the class for the
        # duration of the call is the one seam it offers (the event loop runs one callback at a time).
        original = httptools_impl.RequestResponseCycle
        httptools_impl.RequestResponseCycle = RequestResponseCycle  # type: ignore[misc]
        try:
            super().on_headers_complete()
        finally:
            httptools_impl.RequestResponseCycle = original  # type: ignore[misc]
