"""Live feeds over real HTTP: chute's ``EventStream`` service against sse-starlette and FastAPI's native SSE.

Run it with ``./scripts/bench-events`` (``--help`` for the options). Three measurements, all in the same run:

1. **Idle subscribers.** N subscribers (10,000) open ``GET /events/{topic}`` on one server worker; the server's
   resident memory is read before and after, summed over its processes.
2. **Fan-out latency.** With those N connected, events are published one at a time (``POST /events/{topic}``)
   with the publisher's ``time.time_ns()`` in the data; every subscriber's arrival time minus that is one
   delivery's latency, reported as p50, p99 and max over every delivery of every measured event. chute runs
   twice: with its in-process broker on one worker, and with the Redis broker on two workers.
3. **Kill and restart** (chute, Redis broker, 2 workers): clients follow a topic with a WHATWG-style reconnect
   loop (``Last-Event-ID``) while events are published straight into Redis; the whole server is killed with
   SIGKILL part-way and started again. Every client must end with every event, in order, none twice.
   sse-starlette's and FastAPI's recipes have no replay, so this measurement is chute's alone.

A fourth contender, ``floor``, is a yardstick rather than a server one would run: a bare ASGI app on the same
uvicorn whose subscribers wait on one broadcast event and send it, with no framework, heartbeat, send deadline or
disconnect handling. What it costs is what any ASGI feed on uvicorn costs at least, on the same machine.

The subscribers live in two client processes (uvloop), each holding raw non-blocking sockets read by
``recvmsg`` from the loop's reader callbacks. Each read carries the kernel's receive timestamp
(``SO_TIMESTAMPNS``): the moment the bytes reached the subscriber's socket, whatever the client process was busy
with, so the client's own speed does not enter the latency (the time the client got round to reading is
reported beside it). Connections are opened 500 at a time and every one must have its 200 before anything is
published. On a 2-core machine the one-worker servers are pinned to CPU 0 and the clients and the publisher to
CPU 1, so the clients never take the server's core.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import codecs
import collections
import contextlib
import dataclasses
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from benchmarks import common
from benchmarks.common import (
    HOST,
    MB,
    RssSampler,
    Say,
    Server,
    Target,
    by_contender,
    conclude,
    console_and_say,
    free_port,
)

KiB = 1024

# -- targets (set for 10,000 subscribers)

RSS_LIMIT = 200 * MB
"""10,000 idle subscribers on one worker: the server's RSS at most this."""
P99_MEMORY = 0.100
"""One event to 10,000 subscribers, in-process broker, 1 worker: p99 delivery latency at most this (seconds)."""
P99_REDIS = 0.250
"""The same with the Redis broker and 2 workers."""

# -- the knobs

BATCH = 500
"""Connections opened at once during the ramp (uvicorn's listen backlog is 2048)."""
CLIENT_PROCESSES = 2
MAX_STREAMS = 1_000_000
"""``CHUTE_MAX_STREAMS`` for the benchmark's servers: the default (10,000 per process) would refuse the last ones."""
HEARTBEAT = 15.0
"""``CHUTE_HEARTBEAT``: chute's default, and sse-starlette's and FastAPI's ping interval."""
WARM_UP = 0
"""The sequence number of warm-up events: published until every subscriber has one, so all are subscribed."""
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


# == the client processes (everything up to "the runner" runs in them)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
CMSG_SIZE = socket.CMSG_SPACE(16)  # one struct timespec
RECV_SIZE = 64 * KiB
DATA_LINE = re.compile(rb"(?m)^data: ?([^\r\n]*)")
"""A ``data:`` line of an event. The body is chunked; a chunk-size line ends with CRLF, so a data line right after
it still starts a line, and every contender sends each event in one chunk."""


class _Sub:
    """One subscriber socket of the fan-out measurement."""

    __slots__ = ("buf", "closed", "head", "last", "sock", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head: bytearray | None = bytearray()
        self.status = 0  # 0 until the headers are in
        self.buf = b""
        self.last = -1  # the highest sequence number seen
        self.closed = False


class _Feeds:
    """The fan-out subscribers of one client process: raw sockets read from the loop's reader callbacks."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.subs: list[_Sub] = []
        self.kernel: dict[int, array.array[int]] = collections.defaultdict(lambda: array.array("q"))
        """Per sequence number: kernel arrival time minus publish time, ns, one per delivery."""
        self.read: dict[int, array.array[int]] = collections.defaultdict(lambda: array.array("q"))
        """The same with the time this process read the bytes."""
        self.malformed = 0
        self.disorder = 0
        """Events that arrived after a later one, or twice (warm-up events aside)."""
        self.closed_by_server = 0
        self.connect_errors: collections.Counter[str] = collections.Counter()
        self.unanswered = 0
        """Subscribers of the current ``open`` still waiting for their status line."""
        self.answered = asyncio.Event()

    async def open(self, count: int, path: str, patience: float) -> dict[str, Any]:
        """Open ``count`` subscribers at once; return when every one has its status line (or after ``patience``
        seconds)."""
        loop = asyncio.get_running_loop()
        request = f"GET {path} HTTP/1.1\r\nHost: {self.address[0]}\r\nAccept: text/event-stream\r\n\r\n".encode()
        fresh: list[_Sub] = []
        self.answered.clear()

        async def one() -> None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, self.address), patience)
                sock.send(request)  # a few dozen bytes into an empty send buffer: never partial
            except (OSError, TimeoutError) as exc:
                self.connect_errors[type(exc).__name__] += 1
                sock.close()
                self._answer()
                return
            sub = _Sub(sock)
            fresh.append(sub)
            self.subs.append(sub)
            loop.add_reader(sock.fileno(), self._readable, sub)

        started = time.monotonic()
        # Counted before any connects: the event is set once every one of them has answered or failed.
        self.unanswered = count
        if count:
            await asyncio.gather(*(one() for _ in range(count)))
        else:
            self.answered.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.answered.wait(), max(0.0, started + patience - time.monotonic()))
        statuses = collections.Counter(
            "closed" if s.closed and not s.status else str(s.status) if s.status else "no answer" for s in fresh
        )
        return {"statuses": dict(statuses), "errors": dict(self.connect_errors), "seconds": time.monotonic() - started}

    def _answer(self) -> None:
        self.unanswered -= 1
        if self.unanswered == 0:
            self.answered.set()

    def _readable(self, sub: _Sub) -> None:
        try:
            data, ancillary, _, _ = sub.sock.recvmsg(RECV_SIZE, CMSG_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        read_ns = time.time_ns()
        if not data:
            self._drop(sub)
            return
        arrived = read_ns
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack_from("qq", payload)
                arrived = seconds * 1_000_000_000 + nanoseconds
        if sub.head is not None:
            sub.head += data
            end = sub.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(sub.head[: sub.head.find(b"\r\n")])
            try:
                sub.status = int(status_line.split(b" ", 2)[1])
            except (IndexError, ValueError):
                sub.status = -1
            data = bytes(sub.head[end + 4 :])
            sub.head = None
            self._answer()
        buf = sub.buf + data if sub.buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            sub.buf = buf
            return
        sub.buf = buf[end + 1 :]
        for match in DATA_LINE.finditer(buf, 0, end + 1):
            number, _, sent = match.group(1).partition(b" ")
            try:
                seq, published = int(number), int(sent)
            except ValueError:
                self.malformed += 1
                continue
            if seq <= sub.last and seq != WARM_UP:
                self.disorder += 1
            sub.last = max(sub.last, seq)
            self.kernel[seq].append(arrived - published)
            self.read[seq].append(read_ns - published)

    def _drop(self, sub: _Sub) -> None:
        if sub.closed:
            return
        sub.closed = True
        if sub.status:
            self.closed_by_server += 1
        elif sub.head is not None:
            sub.head = None
            self._answer()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sub.sock.fileno())
        sub.sock.close()

    def seen(self, seq: int) -> dict[str, int]:
        """How many open subscribers have seen event ``seq`` (or a later one)."""
        live = [s for s in self.subs if s.status == 200 and not s.closed]
        return {"seen": sum(1 for s in live if s.last >= seq), "live": len(live)}

    def report(self, seqs: Sequence[int]) -> dict[str, Any]:
        return {
            "kernel": {seq: self.kernel[seq].tobytes() for seq in seqs},
            "read": {seq: self.read[seq].tobytes() for seq in seqs},
            "malformed": self.malformed,
            "disorder": self.disorder,
            "closed_by_server": self.closed_by_server,
            "live": self.seen(0)["live"],
        }

    def close(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sub in self.subs:
            if not sub.closed:
                sub.closed = True
                with contextlib.suppress(Exception):
                    loop.remove_reader(sub.sock.fileno())
                sub.sock.close()
        self.subs.clear()
        return {"closed": True}


# -- the reconnecting clients of the kill-and-restart measurement


class SSEParser:
    """The WHATWG event-stream interpretation (HTML §9.2.6), fed decoded text as it arrives.

    Lines end with CRLF, LF or CR; ``id`` sets the last event ID buffer (unless it holds NUL), which becomes the
    last event ID at dispatch (a blank line), data or not; ``retry`` of ASCII digits sets the reconnection time;
    an event with no data is not dispatched. The last event ID outlives the connection, as an ``EventSource``'s.
    """

    LINE_END = re.compile(r"\r\n|\r|\n")

    def __init__(self) -> None:
        self.last_id = ""
        self.retry_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """A new connection: the pending line, data and event type are dropped, the last event ID stays."""
        self.pending = ""
        self.data: list[str] = []
        self.event = ""
        self.id_buffer = self.last_id
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.first = True

    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]:
        """The events ``chunk`` completes, as ``(type, data, last event id)``."""
        text = self.decoder.decode(chunk)
        if self.first and text:
            text = text.removeprefix("\ufeff")
            self.first = False
        self.pending += text
        out: list[tuple[str, str, str]] = []
        start = 0
        for match in self.LINE_END.finditer(self.pending):
            if match.group() == "\r" and match.end() == len(self.pending):
                break  # maybe the first half of a CRLF: wait for the next chunk
            self._line(self.pending[start : match.start()], out)
            start = match.end()
        self.pending = self.pending[start:]
        return out

    def _line(self, line: str, out: list[tuple[str, str, str]]) -> None:
        if not line:
            self.last_id = self.id_buffer
            if self.data:
                out.append((self.event or "message", "\n".join(self.data), self.last_id))
            self.data = []
            self.event = ""
            return
        if line.startswith(":"):
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)


class Refused(Exception):
    """An answer other than 200 ``text/event-stream``: an EventSource fails the connection and stops."""


@dataclasses.dataclass
class _Follow:
    seqs: array.array[int] = dataclasses.field(default_factory=lambda: array.array("i"))
    warm: bool = False
    done: bool = False
    reconnects: int = 0
    connect_failures: int = 0
    resets: int = 0
    failure: str | None = None


DEFAULT_RECONNECT_MS = 3000
"""The reconnection time before the server sends one (browsers use a few seconds; chute's hint is 3000 ms)."""


async def _chunks(reader: asyncio.StreamReader) -> Any:
    """The payload of a chunked body, piece by piece, until the terminating chunk."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            return
        payload = await reader.readexactly(size + 2)
        yield payload[:-2]


class _Follows:
    """Clients that follow one topic and reconnect after any drop, as an ``EventSource`` does."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.follows: list[_Follow] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, count: int, path: str, last: int, deadline_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        for _ in range(count):
            follow = _Follow()
            self.follows.append(follow)
            self.tasks.append(asyncio.create_task(self._run(follow, path, last, deadline)))
        return {"started": count}

    async def _run(self, follow: _Follow, path: str, last: int, deadline: float) -> None:
        parser = SSEParser()
        while not follow.done and time.monotonic() < deadline:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, opened = await asyncio.wait_for(asyncio.open_connection(*self.address), 5)
                writer = opened
                lines = [f"GET {path} HTTP/1.1", f"Host: {self.address[0]}", "Accept: text/event-stream"]
                lines.append("Cache-Control: no-cache")
                if parser.last_id:
                    lines.append(f"Last-Event-ID: {parser.last_id}")
                opened.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                status = int(head.split(" ", 2)[1])
                if status != 200 or "content-type: text/event-stream" not in head:
                    raise Refused(f"status {status}")
                if "transfer-encoding: chunked" not in head:
                    raise Refused("the body is not chunked")
                parser.reset()
                async for piece in _chunks(reader):
                    for kind, data, _ in parser.feed(piece):
                        if kind == "reset":
                            follow.resets += 1
                        elif data == "warmup":
                            follow.warm = True
                        elif kind == "message":
                            seq = int(data)
                            follow.seqs.append(seq)
                            if seq == last:
                                follow.done = True
                    if follow.done:
                        break
            except Refused as exc:
                follow.failure = str(exc)
                return
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                follow.connect_failures += writer is None
            finally:
                if writer is not None:
                    writer.close()
            if follow.done:
                return
            follow.reconnects += 1
            await asyncio.sleep((parser.retry_ms or DEFAULT_RECONNECT_MS) / 1000)
        if not follow.done:
            follow.failure = "deadline"

    def status(self) -> dict[str, int]:
        return {
            "warm": sum(f.warm for f in self.follows),
            "done": sum(f.done or f.failure is not None for f in self.follows),
            "received": sum(len(f.seqs) for f in self.follows),
            "clients": len(self.follows),
        }

    async def report(self, last: int) -> list[dict[str, Any]]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        out = []
        for follow in self.follows:
            seqs = follow.seqs.tolist()
            distinct = set(seqs)
            out.append(
                {
                    "received": len(seqs),
                    "complete": seqs == list(range(1, last + 1)),
                    "missing": len(set(range(1, last + 1)) - distinct),
                    "duplicates": len(seqs) - len(distinct),
                    "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b < a),
                    "reconnects": follow.reconnects,
                    "connect_failures": follow.connect_failures,
                    "resets": follow.resets,
                    "failure": follow.failure,
                }
            )
        return out


async def _serve_commands(conn: multiprocessing.connection.Connection, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    feeds = _Feeds(host, port)
    follows = _Follows(host, port)
    while True:
        try:
            command, *args = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):  # the runner is gone
            command, args = "exit", []
        try:
            if command == "exit":
                feeds.close()
                for task in follows.tasks:
                    task.cancel()
                with contextlib.suppress(OSError):
                    conn.send({"exited": True})
                return
            if command == "open":
                reply: Any = await feeds.open(*args)
            elif command == "seen":
                reply = feeds.seen(*args)
            elif command == "report":
                reply = feeds.report(*args)
            elif command == "close":
                reply = feeds.close()
            elif command == "follow":
                reply = await follows.start(*args)
            elif command == "follow-status":
                reply = follows.status()
            elif command == "follow-report":
                reply = await follows.report(*args)
            else:
                reply = {"error": f"unknown command {command!r}"}
        except Exception as exc:
            reply = {"error": repr(exc)}
        conn.send(reply)


def client_process(conn: multiprocessing.connection.Connection, host: str, port: int, cpus: list[int]) -> None:
    """A client process: uvloop, pinned to ``cpus`` when given, answering the runner's commands."""
    import uvloop

    if cpus:
        os.sched_setaffinity(0, cpus)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(_serve_commands(conn, host, port))


# == the runner


class ClientError(RuntimeError):
    pass


class Clients:
    """The client processes, driven over pipes: each command goes to every process, every reply is awaited."""

    def __init__(self, port: int, processes: int, cpus: list[int]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(target=client_process, args=(theirs, HOST, port, cpus), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)
        self.ps = [psutil.Process(p.pid) for p in self.processes if p.pid is not None]

    def ask_each(self, commands: Sequence[tuple[Any, ...]], timeout: float = 120.0) -> list[Any]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        replies = []
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            if not pipe.poll(timeout):
                raise ClientError(f"client process {process.pid} did not answer {commands[0][0]!r} in {timeout} s")
            reply = pipe.recv()
            if isinstance(reply, dict) and "error" in reply:
                raise ClientError(f"client process {process.pid}: {reply['error']}")
            replies.append(reply)
        return replies

    def ask(self, *command: Any, timeout: float = 120.0) -> list[Any]:
        return self.ask_each([command] * len(self.pipes), timeout)

    def cpu_seconds(self) -> float:
        return common.cpu_seconds(self.ps)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("exit",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()


@contextlib.contextmanager
def client_processes(port: int, processes: int, cpus: list[int]) -> Iterator[Clients]:
    clients = Clients(port, processes, cpus)
    try:
        yield clients
    finally:
        clients.close()


def listen_drops() -> int:
    """The kernel's count of connections dropped at a full listen queue (``ListenOverflows`` + ``ListenDrops``)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(counters.get("ListenOverflows", 0)) + int(counters.get("ListenDrops", 0))
    return 0


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


class Publisher:
    """``POST /events/{topic}`` over one keep-alive connection; each body is ``"<seq> <time.time_ns()>"``."""

    IDLE = 2.0
    """uvicorn closes a keep-alive connection idle for 5 s: past this, the next publish opens a fresh one."""

    def __init__(self, port: int, topic: str, token: str) -> None:
        self.port = port
        self.topic = topic
        self.token = token
        self.sock = self._connect()
        self.used = time.monotonic()
        self.pending = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def publish(self, seq: int) -> str:
        if time.monotonic() - self.used > self.IDLE:
            self.sock.close()
            self.sock, self.pending = self._connect(), b""
        self.used = time.monotonic()
        body = f"{seq} {time.time_ns()}".encode()
        head = (
            f"POST /events/{self.topic} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        while (end := self.pending.find(b"\r\n\r\n")) < 0:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the publishing connection")
            self.pending += data
        head_text = self.pending[:end].decode("latin-1")
        status = int(head_text.split(" ", 2)[1])
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", head_text)[1])  # type: ignore[index]
        while len(self.pending) < end + 4 + length:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the publishing connection")
            self.pending += data
        answer = self.pending[end + 4 : end + 4 + length].decode()
        self.pending = self.pending[end + 4 + length :]
        if status != 200:
            raise ClientError(f"publishing answered {status}: {answer}")
        return answer

    def close(self) -> None:
        self.sock.close()


# -- the contenders


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    family: str
    """What ``--only`` selects: chute, sse-starlette or fastapi."""
    description: str
    workers: int = 1
    redis: bool = False


CONTENDERS = (
    Contender("chute", "chute", "chute serve: EventStream, in-process broker, 1 worker"),
    Contender("chute-redis", "chute", "chute serve: EventStream, Redis broker, 2 workers", workers=2, redis=True),
    Contender("sse-starlette", "sse-starlette", "sse-starlette EventSourceResponse, asyncio.Queue per subscriber"),
    Contender("fastapi", "fastapi", "FastAPI native SSE (fastapi.sse), asyncio.Queue per subscriber"),
    Contender("floor", "floor", "yardstick: bare ASGI app, one broadcast asyncio.Event, one send each"),
)
FAMILIES = ("chute", "sse-starlette", "fastapi", "floor")


@dataclasses.dataclass
class Run:
    """What a server needs for one measurement: the temporary folders, the token, the Redis URL, pinning."""

    log_dir: Path
    data_dir: Path
    token: str
    redis_url: str
    pin: bool


def chute_flags() -> set[str]:
    """The flags ``chute serve`` has (``--broker`` and ``--workers`` are recent)."""
    out = subprocess.run(
        [sys.executable, "-m", "chute", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return set(re.findall(r"--[a-z][a-z-]*", out.stdout))


def command(contender: Contender, port: int, run: Run) -> tuple[list[str], dict[str, str]]:
    if contender.family == "chute":
        cmd = [sys.executable, "-m", "chute", "serve", "--host", HOST, "--port", str(port)]
        cmd += ["--data", str(run.data_dir), "--rows", "1000", "--log-level", "warning"]
        if contender.redis:
            cmd += ["--broker", run.redis_url, "--workers", str(contender.workers)]
        env = {
            "CHUTE_PUBLISH_TOKEN": run.token,
            "CHUTE_MAX_STREAMS": str(MAX_STREAMS),
            "CHUTE_HEARTBEAT": str(HEARTBEAT),
        }
    else:
        cmd = [sys.executable, "-m", "benchmarks.event_apps", contender.name, str(port)]
        env = {}
    if run.pin and contender.workers == 1 and shutil.which("taskset"):
        cmd = ["taskset", "--cpu-list", "0", *cmd]
    return cmd, env


HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""Processes a server starts beside the ones that serve HTTP: multiprocessing's resource tracker, and the fork
server of chute's /stream-batches pool (with the pool's workers, its children). They hold no feed."""


class FeedServer(Server):
    """A server whose RSS counts the processes that serve HTTP (with several workers, the supervisor and the
    workers); helper processes (:data:`HELPERS` and their children) are left out of it, but stopped with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.serving: list[psutil.Process] = [self.ps]

    def refresh(self) -> None:
        """List the processes again (helpers may start after the first answer) and sort out the helpers."""
        with contextlib.suppress(psutil.Error):
            self.members = [self.ps, *self.ps.children(recursive=True)]
        helpers: set[int] = set()
        for member in self.members[1:]:
            with contextlib.suppress(psutil.Error):
                if any(name in " ".join(member.cmdline()) for name in HELPERS):
                    helpers.add(member.pid)
                    helpers.update(child.pid for child in member.children(recursive=True))
        self.serving = [m for m in self.members if m.pid not in helpers]

    def rss(self) -> int:
        return common.rss_of(self.serving)

    def cpu_seconds(self) -> float:
        return common.cpu_seconds(self.serving)

    def total_rss(self) -> int:
        """Every process of the server, helpers included."""
        return super().rss()


def start(contender: Contender, port: int, run: Run) -> FeedServer:
    cmd, env = command(contender, port, run)
    server = common.started(FeedServer(contender.name, cmd, run.log_dir, port=port, env=env))
    # Workers and helpers may still be starting when the first answer comes: let them, then list them.
    time.sleep(1.0)
    server.refresh()
    return server


@contextlib.contextmanager
def profiling(server: Server, output: Path | None, say: Say) -> Iterator[None]:
    """py-spy samples the server (and its workers) for the duration of the block, into collapsed stacks."""
    if output is None:
        yield
        return
    binary = shutil.which("py-spy")
    if binary is None:
        say("    [yellow]--profile: py-spy is not on PATH (pip install py-spy)[/]")
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            *(binary, "record", "--pid", str(server.process.pid), "--subprocesses", "--nonblocking"),
            *("--rate", "250", "--format", "raw", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # py-spy attaches
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        say(f"    profile: {output}")


def kill(server: Server) -> None:
    """SIGKILL every process of the server at once (supervisor and workers), as a crash would."""
    for member in [server.ps, *server.ps.children(recursive=True), *server.members]:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    server.process.wait()


def delete_topic(redis_url: str, topic: str) -> None:
    """Delete every Redis key that names the run's topic (the broker's stream, whatever its prefix)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{topic}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_reachable(redis_url: str) -> str | None:
    """``None`` when Redis answers, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{redis_url}: {exc}"
    return None


# -- measurements 1 and 2: idle subscribers, then fan-out


@dataclasses.dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ns: Sequence[int]) -> Latency:
        if not values_ns:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(values_ns)

        def pick(q: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6

        return cls(len(ordered), pick(0.50), pick(0.99), ordered[-1] / 1e6)


@dataclasses.dataclass
class Fanout:
    contender: str
    description: str
    workers: int
    subscribers: int
    connected: int = 0
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    connect_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    ramp_seconds: float = 0.0
    listen_drops: int = 0
    """Connections the kernel dropped at a full listen queue during the ramp (each costs its client a SYN retry)."""
    rss_before: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    rss_total_before: int = 0
    """Every process of the server, helpers included (chute: the /stream-batches pool and its fork server)."""
    rss_total_after: int = 0
    events: int = 0
    expected: int = 0
    """Deliveries expected: measured events times connected subscribers."""
    delivered: int = 0
    latency: Latency | None = None
    """Kernel arrival time minus publish time, every delivery of every measured event."""
    read_latency: Latency | None = None
    """The time the client process read the bytes, minus publish time: adds the client's own queueing."""
    per_event: list[Latency] = dataclasses.field(default_factory=list)
    warm_up_seconds: float = 0.0
    server_cpu_per_event: float = 0.0
    client_cpu_per_event: float = 0.0
    malformed: int = 0
    disorder: int = 0
    closed_by_server: int = 0
    error: str | None = None

    @property
    def kib_per_subscriber(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.connected) / KiB

    @property
    def all_connected(self) -> bool:
        return self.connected == self.subscribers


def ramp(clients: Clients, result: Fanout, path: str, say: Say) -> None:
    """Open the subscribers ``BATCH`` at a time, each batch split over the client processes."""
    statuses: collections.Counter[str] = collections.Counter()
    errors: dict[str, int] = {}
    started = time.monotonic()
    drops = listen_drops()
    opened = 0
    while opened < result.subscribers:
        batch = min(BATCH, result.subscribers - opened)
        replies = clients.ask_each([("open", n, path, 30.0) for n in split(batch, len(clients.pipes))])
        for reply in replies:
            statuses.update(reply["statuses"])
            for name, count in reply["errors"].items():
                errors[name] = max(errors.get(name, 0), count)  # each process reports its running total
        opened += batch
        if opened % 2000 == 0 or opened == result.subscribers:
            say(
                f"    {opened:>6,} opened, {statuses.get('200', 0):,} answered 200 ({time.monotonic() - started:.1f} s)"
            )
    result.ramp_seconds = time.monotonic() - started
    result.listen_drops = listen_drops() - drops
    result.statuses = dict(statuses)
    result.connect_errors = errors
    result.connected = statuses.get("200", 0)


def seen(clients: Clients, seq: int) -> tuple[int, int]:
    replies = clients.ask("seen", seq)
    return sum(r["seen"] for r in replies), sum(r["live"] for r in replies)


def wait_seen(clients: Clients, seq: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        got, live = seen(clients, seq)
        if got >= live or time.monotonic() > deadline:
            return got, live
        time.sleep(0.02)


def fanout(contender: Contender, args: argparse.Namespace, run: Run, say: Say) -> Fanout:
    result = Fanout(contender.name, contender.description, contender.workers, args.subscribers)
    topic = f"bench-{secrets.token_hex(6)}"
    path = f"/events/{topic}"
    pinned = run.pin and contender.workers == 1
    server_cpus, client_cpus = ([0], [1]) if pinned else ([], [])
    say(f"  {contender.name}: {contender.description}")
    port = free_port()
    own_affinity = os.sched_getaffinity(0)
    server: FeedServer | None = None
    try:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # the publisher and the RSS sampler share the clients' CPU
        server = start(contender, port, run)
        if server_cpus and not shutil.which("taskset"):
            for member in server.members:
                member.cpu_affinity(server_cpus)
        server.refresh()
        result.rss_before = server.idle_rss()
        result.rss_total_before = server.total_rss()
        with client_processes(port, CLIENT_PROCESSES, client_cpus) as clients:
            ramp(clients, result, path, say)
            publisher = Publisher(port, topic, run.token)
            try:
                # Warm-up events until every subscriber has one: then every subscription is live.
                started = time.monotonic()
                for _ in range(30):
                    publisher.publish(WARM_UP)
                    got, live = wait_seen(clients, WARM_UP, 1.0)
                    if got >= live:
                        break
                result.warm_up_seconds = time.monotonic() - started
                if got < live:
                    say(f"    [yellow]warm-up reached {got:,} of {live:,} subscribers[/]")
                time.sleep(1.0)
                server.refresh()
                result.rss_after = server.idle_rss()
                result.rss_total_after = server.total_rss()
                say(
                    f"    RSS {result.rss_before / MB:.0f} MB before, {result.rss_after / MB:.0f} MB with"
                    f" {result.connected:,} subscribers ({result.kib_per_subscriber:.1f} KiB each)"
                )
                seqs = list(range(1, args.events + 1))
                server_cpu, client_cpu = server.cpu_seconds(), clients.cpu_seconds()
                profile = args.profile / f"{contender.name}-fanout.txt" if args.profile else None
                with RssSampler(server) as sampler, profiling(server, profile, say):
                    begin = time.monotonic()
                    for seq in seqs:
                        time.sleep(max(0.0, begin + (seq - 1) * args.spacing - time.monotonic()))
                        publisher.publish(seq)
                    got, live = wait_seen(clients, seqs[-1], 30.0)
                result.server_cpu_per_event = (server.cpu_seconds() - server_cpu) / len(seqs)
                result.client_cpu_per_event = (clients.cpu_seconds() - client_cpu) / len(seqs)
                result.rss_peak = max(sampler.peak, result.rss_after)
            finally:
                publisher.close()
            reports = clients.ask("report", seqs)
            clients.ask("close")
        result.events = len(seqs)
        result.expected = result.connected * len(seqs)
        kernel: list[int] = []
        read: list[int] = []
        for seq in seqs:
            this: list[int] = []
            for report in reports:
                this += array.array("q", report["kernel"][seq]).tolist()
                read += array.array("q", report["read"][seq]).tolist()
            result.per_event.append(Latency.of(this))
            kernel += this
        result.delivered = len(kernel)
        result.latency = Latency.of(kernel)
        result.read_latency = Latency.of(read)
        result.malformed = sum(r["malformed"] for r in reports)
        result.disorder = sum(r["disorder"] for r in reports)
        result.closed_by_server = sum(r["closed_by_server"] for r in reports)
        lat = result.latency
        say(
            f"    {result.delivered:,}/{result.expected:,} deliveries: p50 {lat.p50_ms:.1f} ms,"
            f" p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms;"
            f" server CPU {result.server_cpu_per_event * 1000:.0f} ms per event"
        )
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if server is not None and server.process.poll() is not None:
            result.error += " / server log: " + server.log_path.read_text(errors="replace")[-600:]
        say(f"    [red]{result.error}[/]")
    finally:
        if server is not None:
            server.stop()
        os.sched_setaffinity(0, own_affinity)
        if contender.redis:
            with contextlib.suppress(Exception):
                delete_topic(run.redis_url, topic)
    return result


# -- measurement 3: kill and restart


@dataclasses.dataclass
class Restart:
    clients: int
    events: int
    rate: float
    complete: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    resets: int = 0
    reconnects: int = 0
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    killed_at: int = 0
    """The sequence number published last before the kill."""
    published_while_down: int = 0
    downtime: float = 0.0
    """Seconds from the kill to the new server's first answer."""
    publish_seconds: float = 0.0
    catch_up_seconds: float = 0.0
    """Seconds from the last publish until every client had every event."""
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.complete == self.clients


def restart(args: argparse.Namespace, run: Run, say: Say) -> Restart:
    from chute.brokers import RedisBroker

    contender = next(c for c in CONTENDERS if c.name == "chute-redis")
    result = Restart(args.restart_clients, args.restart_events, args.restart_rate)
    topic = f"bench-{secrets.token_hex(6)}"
    path = f"/events/{topic}"
    port = free_port()
    say(
        f"  kill -9 and restart: {result.clients} clients, {result.events:,} events at {result.rate:g}/s"
        f" straight into Redis, {contender.description}"
    )
    servers: list[FeedServer] = []
    try:
        servers.append(start(contender, port, run))
        with client_processes(port, CLIENT_PROCESSES, []) as clients:
            deadline = args.restart_events / args.restart_rate + 180.0
            clients.ask_each([("follow", n, path, result.events, deadline) for n in split(result.clients, 2)])

            async def scenario() -> None:
                broker = RedisBroker(run.redis_url)
                try:
                    # Warm-up events until every client has one: then every client is subscribed.
                    for _ in range(300):
                        await broker.publish(topic, "warmup")
                        await asyncio.sleep(0.1)
                        status = await asyncio.to_thread(clients.ask, "follow-status")
                        if sum(s["warm"] for s in status) == result.clients:
                            break
                    else:
                        raise ClientError("not every client got the warm-up event")
                    result.killed_at = max(1, int(result.events * args.kill_at))
                    published = killed = 0.0
                    current = 0

                    def relaunch() -> None:
                        time.sleep(args.down)
                        servers.append(start(contender, port, run))
                        result.downtime = time.monotonic() - killed
                        result.published_while_down = current - result.killed_at

                    relaunched: asyncio.Future[None] | None = None
                    published = time.monotonic()
                    for seq in range(1, result.events + 1):
                        delay = published + seq / result.rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        await broker.publish(topic, str(seq))
                        current = seq
                        if seq == result.killed_at:
                            kill(servers[-1])
                            killed = time.monotonic()
                            say(f"    killed every server process after event {seq:,}; publishing on")
                            relaunched = asyncio.get_running_loop().run_in_executor(None, relaunch)
                    result.publish_seconds = time.monotonic() - published
                    if relaunched is not None:
                        await relaunched
                    say(
                        f"    server back {result.downtime:.1f} s after the kill;"
                        f" {result.published_while_down:,} events were published while it was down"
                    )
                    finished = time.monotonic()
                    while time.monotonic() - finished < deadline:
                        status = await asyncio.to_thread(clients.ask, "follow-status")
                        if sum(s["done"] for s in status) == result.clients:
                            break
                        await asyncio.sleep(0.2)
                    result.catch_up_seconds = time.monotonic() - finished
                finally:
                    await broker.aclose()

            asyncio.run(scenario())
            reports = [r for reply in clients.ask("follow-report", result.events) for r in reply]
        result.complete = sum(r["complete"] for r in reports)
        result.missing = sum(r["missing"] for r in reports)
        result.duplicates = sum(r["duplicates"] for r in reports)
        result.out_of_order = sum(r["out_of_order"] for r in reports)
        result.resets = sum(r["resets"] for r in reports)
        result.reconnects = sum(r["reconnects"] for r in reports)
        result.failed = dict(collections.Counter(r["failure"] for r in reports if r["failure"]))
        say(
            f"    {result.complete}/{result.clients} clients complete, {result.missing:,} missing,"
            f" {result.duplicates:,} duplicates, {result.out_of_order:,} out of order, {result.reconnects} reconnects"
            f" (caught up {result.catch_up_seconds:.1f} s after the last publish)"
        )
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if servers and servers[-1].process.poll() is not None:
            result.error += " / server log: " + servers[-1].log_path.read_text(errors="replace")[-600:]
        say(f"    [red]{result.error}[/]")
    finally:
        for server in servers:
            server.stop()
        with contextlib.suppress(Exception):
            delete_topic(run.redis_url, topic)
    return result


# -- verdicts and output


@dataclasses.dataclass
class Results:
    fanout: list[Fanout] = dataclasses.field(default_factory=list)
    restart: Restart | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def targets(results: Results, args: argparse.Namespace) -> list[Target]:
    n = f"{args.subscribers:,}"
    out: list[Target] = []
    chute = by_contender(results.fanout, "chute")
    if chute is not None:
        ok = chute.error is None and chute.all_connected
        out.append(
            Target(
                f"{n} idle subscribers, 1 worker: chute server RSS",
                f"<= {RSS_LIMIT / MB:g} MB",
                f"{chute.rss_after / MB:.0f} MB ({chute.kib_per_subscriber:.1f} KiB each,"
                f" {chute.connected:,} connected)"
                if ok
                else chute.error or f"{chute.connected:,} of {chute.subscribers:,} connected",
                ok and chute.rss_after <= RSS_LIMIT,
            )
        )
    for name, limit, label in (
        ("chute", P99_MEMORY, "in-process broker, 1 worker"),
        ("chute-redis", P99_REDIS, "Redis broker, 2 workers"),
    ):
        row = by_contender(results.fanout, name)
        if row is None:
            if name in results.skipped:
                out.append(
                    Target(
                        f"one event to {n}: p99, chute {label}", f"<= {limit * 1000:g} ms", results.skipped[name], None
                    )
                )
            continue
        lat = row.latency
        ok = row.error is None and lat is not None and row.all_connected and row.delivered == row.expected
        out.append(
            Target(
                f"one event to {n}: p99 delivery, chute {label}",
                f"<= {limit * 1000:g} ms",
                f"{lat.p99_ms:.1f} ms (p50 {lat.p50_ms:.1f}, max {lat.max_ms:.1f}; {row.delivered:,}/{row.expected:,})"
                if lat is not None and row.error is None
                else row.error or "not measured",
                ok and lat is not None and lat.p99_ms <= limit * 1000,
            )
        )
    if results.restart is not None:
        r = results.restart
        out.append(
            Target(
                f"kill -9 + restart (Redis, 2 workers), {r.clients} clients x {r.events:,} events: all complete",
                f"{r.clients}/{r.clients}",
                r.error
                or f"{r.complete}/{r.clients} ({r.missing} missing, {r.duplicates} twice,"
                f" {r.out_of_order} out of order)",
                r.passed,
            )
        )
    elif "restart" in results.skipped:
        out.append(
            Target("kill -9 + restart (Redis, 2 workers): all complete", "all", results.skipped["restart"], None)
        )
    return out


def _ms(value: float) -> str:
    return "" if value != value else f"{value:.1f}"


def idle_table(results: Results, args: argparse.Namespace) -> Table:
    table = common.table(
        f"{args.subscribers:,} idle subscribers: the server's RSS (its HTTP processes, summed)",
        ("contender", "server", "workers"),
        (
            "connected (200)",
            "ramp s",
            "listen drops",
            "RSS before MB",
            "RSS after MB",
            "growth MB",
            "KiB/subscriber",
            "all processes MB",
        ),
    )
    for r in results.fanout:
        other = {k: v for k, v in r.statuses.items() if k != "200"}
        connected = (
            f"{r.connected:,}" + (f" ({other})" if other else "") + (f" {r.connect_errors}" if r.connect_errors else "")
        )
        if r.rss_after == 0:
            table.add_row(r.contender, r.description, str(r.workers), connected)
            continue
        table.add_row(
            r.contender,
            r.description,
            str(r.workers),
            connected,
            f"{r.ramp_seconds:.1f}",
            str(r.listen_drops),
            f"{r.rss_before / MB:.0f}",
            f"{r.rss_after / MB:.0f}",
            f"{(r.rss_after - r.rss_before) / MB:+.0f}",
            f"{r.kib_per_subscriber:.1f}",
            f"{r.rss_total_before / MB:.0f} -> {r.rss_total_after / MB:.0f}",
        )
    return table


def fanout_table(results: Results, args: argparse.Namespace) -> Table:
    table = common.table(
        f"One event to {args.subscribers:,} subscribers: {args.events} events {args.spacing:g} s apart,"
        " latency = arrival (kernel timestamp) - publish",
        ("contender", "workers"),
        (
            "deliveries",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 per event ms",
            "client-read p99 ms",
            "server CPU ms/event",
            "client CPU ms/event",
            "RSS peak MB",
            "lost/dup",
        ),
    )
    for r in results.fanout:
        lat, read = r.latency, r.read_latency
        if lat is None or read is None:
            table.add_row(r.contender, str(r.workers), r.error or "not measured")
            continue
        table.add_row(
            r.contender,
            str(r.workers),
            f"{r.delivered:,}/{r.expected:,}",
            _ms(lat.p50_ms),
            _ms(lat.p99_ms),
            _ms(lat.max_ms),
            " ".join(f"{e.p99_ms:.0f}" for e in r.per_event),
            _ms(read.p99_ms),
            f"{r.server_cpu_per_event * 1000:.0f}",
            f"{r.client_cpu_per_event * 1000:.0f}",
            f"{r.rss_peak / MB:.0f}",
            f"{r.expected - r.delivered + r.closed_by_server}/{r.disorder}",
        )
    return table


def restart_table(r: Restart) -> Table:
    table = Table(
        title=f"kill -9 of the whole server (Redis broker, 2 workers) while {r.events:,} events are published to"
        f" Redis (paced at {r.rate:g}/s at most); {r.clients} clients reconnect with Last-Event-ID"
    )
    for name in (
        "clients complete",
        "missing",
        "duplicates",
        "out of order",
        "resets",
        "reconnects",
        "published in s",
        "killed after",
        "down s",
        "published while down",
        "caught up s",
    ):
        table.add_column(name, justify="right")
    table.add_row(
        f"{r.complete}/{r.clients}" + (f" {r.failed}" if r.failed else ""),
        f"{r.missing:,}",
        f"{r.duplicates:,}",
        f"{r.out_of_order:,}",
        f"{r.resets:,}",
        f"{r.reconnects:,}",
        f"{r.publish_seconds:.1f}",
        f"{r.killed_at:,}",
        f"{r.downtime:.1f}",
        f"{r.published_while_down:,}",
        f"{r.catch_up_seconds:.1f}",
    )
    return table


def system() -> dict[str, Any]:
    def sysctl(name: str) -> str:
        try:
            return Path("/proc/sys", *name.split(".")).read_text().split("\n")[0].replace("\t", " ")
        except OSError:
            return "?"

    return {
        "somaxconn": sysctl("net.core.somaxconn"),
        "tcp_max_syn_backlog": sysctl("net.ipv4.tcp_max_syn_backlog"),
        "ip_local_port_range": sysctl("net.ipv4.ip_local_port_range"),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def environment(redis_url: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"system": system()}
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        extra["redis_server"] = client.info("server").get("redis_version")
        client.close()
    return common.environment(
        ("chute", "fastapi", "starlette", "sse-starlette", "uvicorn", "uvloop", "httptools", "anyio", "redis"), extra
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-events", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=10_000, help="idle subscribers per server (10,000)")
    parser.add_argument("--events", type=int, default=5, help="events measured per fan-out (5)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between measured events (1)")
    parser.add_argument("--restart-clients", type=int, default=100, help="clients of the kill-and-restart run (100)")
    parser.add_argument("--restart-events", type=int, default=10_000, help="events published during it (10,000)")
    parser.add_argument("--restart-rate", type=float, default=1000.0, help="events per second published (1000)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="kill after this share of the events (0.3)")
    parser.add_argument("--down", type=float, default=1.0, help="seconds before the server is started again (1)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"Redis for the Redis rows ({DEFAULT_REDIS})")
    parser.add_argument(
        "--only",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=list(FAMILIES),
        help=f"comma-separated, from {', '.join(FAMILIES)} (default: {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the servers during each fan-out into this folder"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin one-worker servers and clients to CPUs")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 subscribers, 3 events, 20 restart clients x 2,000"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.events, args.spacing = 1000, 3, 0.5
        args.restart_clients, args.restart_events = 20, 2000
    unknown = [c for c in args.only if c not in FAMILIES]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.subscribers < 1 or args.events < 1:
        parser.error("--subscribers and --events must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console, say = console_and_say()
    begun = time.monotonic()
    cpus = os.cpu_count() or 1
    pin = not args.no_pin and cpus >= 2 and len(os.sched_getaffinity(0)) >= 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    info = system()
    say(
        f"chute events benchmark: {args.subscribers:,} subscribers, {args.events} events {args.spacing:g} s apart;"
        f" {cpus} CPUs; somaxconn {info['somaxconn']}, ports {info['ip_local_port_range']}, nofile {hard};"
        + (" one-worker servers on CPU 0, clients and publisher on CPU 1" if pin else " no CPU pinning")
    )
    if hard < args.subscribers + 1000:
        say(f"[yellow]open files limit {hard} is below {args.subscribers:,} subscribers: connections will fail[/]")
    results = Results()
    flags = chute_flags() if "chute" in args.only else set()
    redis_problem = None
    if "chute" in args.only:
        missing = [f for f in ("--broker", "--workers") if f not in flags]
        if missing:
            redis_problem = f"chute serve has no {' / '.join(missing)} flag yet: the Redis rows cannot run"
        else:
            redis_problem = redis_reachable(args.redis)
        if redis_problem:
            say(f"[yellow]{redis_problem}[/]")
    with tempfile.TemporaryDirectory(prefix="chute-bench-events-") as tmp:
        run = Run(Path(tmp), Path(tmp) / "data", secrets.token_urlsafe(16), args.redis, pin)
        for contender in CONTENDERS:
            if contender.family not in args.only:
                continue
            if contender.redis and redis_problem:
                results.skipped[contender.name] = redis_problem
                continue
            results.fanout.append(fanout(contender, args, run, say))
        if "chute" in args.only:
            if redis_problem:
                results.skipped["restart"] = redis_problem
            else:
                results.restart = restart(args, run, say)
    checks = targets(results, args)
    console.print(idle_table(results, args))
    console.print(fanout_table(results, args))
    if results.restart is not None:
        console.print(restart_table(results.restart))
    console.print(
        "MB: 10^6 bytes; RSS: the server's processes that serve HTTP, summed (with 2 workers: the supervisor and"
        " the workers); all processes adds the helpers (multiprocessing's resource tracker; chute's /stream-batches"
        " fork server and pool workers, in each worker), which hold no feed."
        " Latency: the subscriber socket's kernel receive timestamp"
        " minus the publisher's clock in the event; client-read adds the wait for the client process to read it."
        " lost/dup: deliveries missing or connections dropped / events seen twice or out of order."
        " sse-starlette and FastAPI's recipes keep no history, so only chute runs the kill-and-restart measurement."
        " floor is a yardstick, not a usable server: the least an ASGI app on uvicorn does per subscriber."
    )
    return conclude(
        console,
        checks,
        say,
        args,
        started=begun,
        environment=environment(args.redis),
        results=dataclasses.asdict(results),
    )


if __name__ == "__main__":
    sys.exit(main())
