"""Zero-copy file bodies on uvicorn: the ASGI ``http.response.zerocopysend`` extension, answered with sendfile.

An ASGI app otherwise copies every byte of a file twice (into Python, then into the socket); nginx's
``sendfile`` copies once, in the kernel. uvicorn offers no such extension, and uvloop refuses to watch a socket its
transport owns, so :class:`chute.protocol.HttpToolsProtocol` adds it: the cycle waits until the transport has
written everything queued before (the headers), then a worker thread runs ``os.sendfile`` (:func:`sendfile_all`)
on the socket, waiting with
``select`` whenever the socket is full and giving up after ``timeout`` seconds without progress (the send
deadline; the connection is then reset, not drained). The event loop never blocks; a client that leaves makes
``sendfile`` fail at once.

Message keys (the ASGI "Zero Copy Send" extension): ``file`` (an object with ``fileno()``), ``offset``,
``count``, ``more_body``; chute adds ``timeout``. A file that ends before ``count`` bytes raises
:class:`EOFError` in the app, which then aborts the response.

Use it with ``uvicorn.run(app, http=chute.protocol.HttpToolsProtocol)``; ``chute serve`` does.
"""

from __future__ import annotations

import os
import select
import socket
import struct

import anyio

EXTENSION = "http.response.zerocopysend"
DEFAULT_TIMEOUT = 60.0
# One thread per body in flight: a transfer may wait on a slow client, and must not queue behind 40 others
# (anyio's default limit) while its client waits for bytes.
THREADS = anyio.CapacityLimiter(1024)


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
