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

import contextlib
import fcntl
import os
import select
import socket
import struct

import anyio
import anyio.lowlevel

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


# -- splice: socket to socket through a pipe


SPLICE_EXTENSION = "chute.response.splice"
"""chute's ASGI extension: ``source`` (a connected socket with ``fileno()``), ``count``, ``more_body``,
``timeout`` (the send deadline) and ``read_timeout`` (the most the source may stay silent). The server moves
``count`` bytes from the source to the client in the kernel (:func:`splice_all`)."""
PIPE_SIZE = 1 << 20
"""Bytes the pipe between the two sockets may hold: ``/proc/sys/fs/pipe-max-size``'s default, the most an
unprivileged process may ask for. It is kernel memory a stalled client pins besides the socket buffers; a
256 KiB pipe measured half the throughput (``./scripts/bench-proxy``)."""
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class SourceError(Exception):
    """The source of a splice closed before ``count`` bytes, failed, or (``stalled``) stayed silent past
    ``read_timeout``.

    Not an :class:`OSError` (that would read as the client leaving) nor a :class:`TimeoutError` (the send
    deadline): the app must abort the response, whose body would otherwise end short but look complete."""

    def __init__(self, message: str, *, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


def splice_available() -> bool:
    """Whether this platform has ``os.splice`` (Linux, Python 3.10+)."""
    return hasattr(os, "splice")


async def splice_all(source: int, sink: int, count: int, *, send_timeout: float, read_timeout: float | None) -> None:
    """Move ``count`` bytes from the non-blocking socket ``source`` to the non-blocking socket ``sink``.

    Theory of operation. Bytes go source -> pipe -> sink with ``splice(2)``, never through user space. Each round
    fills the pipe as far as the source has bytes, then empties it as far as the sink takes them; when neither
    moves, the task waits on the event loop for what blocks it: the sink to take bytes while the pipe holds some
    (within ``send_timeout``: :class:`TimeoutError`, the send deadline), else the source to have bytes (within
    ``read_timeout``: :class:`SourceError`). The pipe bounds what one transfer holds (:data:`PIPE_SIZE`).
    Both sockets belong to transports, and uvloop will not watch a transport's socket: the waits watch
    duplicates of the descriptors (the same sockets). A cancelled task (the client left) stops at its next
    wait; the caller closes the source. Errors of the sink (the client reset the connection) are raised as the
    ``OSError`` they are; errors of the source become :class:`SourceError`.
    """
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    source_watch = sink_watch = -1
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only costs more rounds
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        source_watch, sink_watch = os.dup(source), os.dup(sink)
        in_pipe = 0
        failure: SourceError | None = None  # raised once the pipe is empty: the client gets every byte read
        while (count and failure is None) or in_pipe:
            moved = False
            while count and failure is None and in_pipe < capacity:
                try:
                    got = os.splice(source, write_end, min(count, capacity - in_pipe), flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    break
                except OSError as exc:
                    failure = SourceError(f"the source failed: {exc.strerror or exc}")
                    failure.__cause__ = exc
                    break
                if got == 0:
                    failure = SourceError(f"the source closed {count} bytes early")
                    break
                count -= got
                in_pipe += got
                moved = True
            while in_pipe:
                try:
                    sent = os.splice(read_end, sink, in_pipe, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    break
                in_pipe -= sent
                moved = True
            if moved:
                # Loopback sockets may never block: let the other connections (and a cancellation) in.
                await anyio.lowlevel.checkpoint()
            elif in_pipe:
                with anyio.fail_after(send_timeout):
                    await anyio.wait_writable(sink_watch)
            elif failure is None:
                with anyio.move_on_after(read_timeout) as waiting:
                    await anyio.wait_readable(source_watch)
                if waiting.cancelled_caught:
                    failure = SourceError(f"the source sent nothing for {read_timeout} s", stalled=True)
        if failure is not None:
            raise failure
    finally:
        for fd in (read_end, write_end, source_watch, sink_watch):
            if fd >= 0:
                os.close(fd)
