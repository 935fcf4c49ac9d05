"""File downloads over real HTTP: chute's ``FileStream`` against nginx (sendfile) and Starlette's ``FileResponse``.

Run it with ``./scripts/bench-files`` (``--help`` for the options). Every contender (see ``benchmarks.file_apps``)
serves the same file of incompressible bytes, generated once into a cache folder and read through before the
run so it is in the page cache. Each contender's server is started fresh for each scenario, so its resident
memory (summed over its worker processes) belongs to that contender and that scenario.

The clients are raw sockets that discard the body in the kernel (``recv`` with ``MSG_TRUNC``: the bytes are
acknowledged and dropped without being copied out), the cheapest client there is: on two cores whatever CPU the
client spends is taken from the server. A client that copies every byte into a buffer, and curl, are measured
too; the comparison is printed at the start of a run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import common, file_apps
from benchmarks.common import (
    HOST,
    MB,
    MiB,
    RssSampler,
    Say,
    Server,
    Target,
    by_contender,
    conclude,
    console_and_say,
    free_port,
)

GB = 1_000_000_000
GiB = 1 << 30

# -- targets

SINGLE_RATIO = 1.0
"""One client: chute's throughput at least nginx's."""
CONCURRENT_RATIO = 0.9
"""Many clients: chute's aggregate throughput at least 0.9x nginx's."""
RSS_LIMIT = 150 * MB
"""Peak RSS of chute's server (all its processes) with many clients downloading, and with many stalled ones."""
FLAT_GROWTH = 5 * MB
"""Stalled clients: the RSS at the end of the hold may exceed the RSS once every client has its headers by this
much at most. A server that holds a bounded buffer per connection reaches its plateau by then."""
RANGES_TIME = 0.050
"""5,000 one-byte ranges: the whole response within 50 ms (a server must not turn them into work or bytes)."""
RANGE_COUNT = 5000

BASELINE = "nginx"
CHUTE = ("chute", "chute-granian")

# -- the clients


class IncompleteResponse(RuntimeError):
    pass


DISCARD = memoryview(bytearray(64 * MiB))
"""The buffer ``MSG_TRUNC`` reads name: the kernel writes nothing into it, so its pages are never even touched."""
COPY_BUFFER = 4 * MiB
"""The copying client's buffer: measured against nginx, 1 MiB reads were ~10% slower and 16 MiB no faster."""


def request_bytes(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclasses.dataclass
class Head:
    status: int
    headers: dict[str, str]

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None


def parse_head(raw: bytes) -> Head:
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(int(status_line.split(" ", 2)[1]), headers)


def read_head(sock: socket.socket) -> tuple[Head, bytes]:
    """Read up to the blank line after the headers; the bytes read past it are the start of the body."""
    raw = b""
    while (end := raw.find(b"\r\n\r\n")) < 0:
        data = sock.recv(64 * 1024)
        if not data:
            raise IncompleteResponse(f"connection closed before the headers ended ({len(raw)} bytes)")
        raw += data
    return parse_head(raw[:end]), raw[end + 4 :]


@dataclasses.dataclass
class Download:
    """One response as the client saw it."""

    status: int
    body_bytes: int
    headers_time: float
    """Seconds from sending the request to the end of the response headers."""
    wall: float
    """Seconds from sending the request to the last body byte."""
    client_cpu: float
    content_type: str = ""
    parts: int | None = None
    """``Content-Range`` lines in a small body (the parts of a multipart answer); ``None`` when not kept."""

    @property
    def gbps(self) -> float:
        return self.body_bytes / self.wall / GB


KEEP_BODY = 16 * MiB
"""Bodies up to this size are kept (by ``download(keep=True)``) to count their parts."""


def download(
    port: int, path: str, *, copy: bool = False, headers: dict[str, str] | None = None, keep: bool = False
) -> Download:
    """GET ``path`` and read the whole body; with ``copy``, into a buffer, else discarded in the kernel.

    The body must be exactly ``Content-Length`` bytes and end with the connection.
    """
    buffer = memoryview(bytearray(COPY_BUFFER)) if copy else DISCARD
    flags = 0 if copy else socket.MSG_TRUNC
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cpu0 = time.thread_time()
        t0 = time.perf_counter()
        sock.sendall(request_bytes(path, headers))
        head, first = read_head(sock)
        headers_time = time.perf_counter() - t0
        length = head.length
        kept = bytearray(first) if keep and length is not None and length <= KEEP_BODY else None
        received = len(first)
        while True:
            if kept is not None:
                data = sock.recv(1 << 20)
                kept += data
                got = len(data)
            else:
                got = sock.recv_into(buffer, len(buffer), flags)
            if not got:
                break
            received += got
        wall = time.perf_counter() - t0
        client_cpu = time.thread_time() - cpu0
    if length is not None and received != length:
        raise IncompleteResponse(f"{path}: {received} body bytes, Content-Length {length}")
    parts = len(re.findall(rb"(?i)\r\ncontent-range:", kept)) if kept is not None else None
    return Download(head.status, received, headers_time, wall, client_cpu, head.headers.get("content-type", ""), parts)


def curl(port: int, path: str) -> Download:
    """The same download by curl into /dev/null, timed by curl itself (its own start-up is not counted)."""
    out = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status, size, ttfb, total = out.stdout.split()
    return Download(int(status), int(size), float(ttfb), float(total), client_cpu=float("nan"))


@dataclasses.dataclass
class _Conn:
    sock: socket.socket
    head: bytes = b""
    length: int | None = None
    body: int = 0


@dataclasses.dataclass
class Swarm:
    """What many clients downloading the file at once moved in a fixed time."""

    clients: int
    elapsed: float
    body_bytes: int
    """Body bytes received by all clients, including those of downloads the deadline cut short."""
    completed: int
    truncated: int
    """Responses that ended before their Content-Length: a server fault (the client never hangs up early)."""
    statuses: dict[str, int]
    client_cpu: float

    @property
    def gbps(self) -> float:
        return self.body_bytes / self.elapsed / GB


def swarm(port: int, path: str, clients: int, duration: float) -> Swarm:
    """``clients`` connections each download ``path`` for ``duration`` seconds, starting over when one ends.

    One thread and epoll: every read discards whatever has arrived on a connection (``MSG_TRUNC``), so the
    client's cost is a system call per wake-up, not per byte.
    """
    request = request_bytes(path)
    selector = selectors.DefaultSelector()
    statuses: collections.Counter[str] = collections.Counter()
    completed = truncated = moved = 0

    def start(sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.send(request)  # a few dozen bytes into an empty send buffer: never partial
        selector.register(sock, selectors.EVENT_READ, _Conn(sock))

    # Connect everyone before the clock starts, then ask at once.
    socks = [socket.create_connection((HOST, port), timeout=10) for _ in range(clients)]
    cpu0 = time.thread_time()
    t0 = time.perf_counter()
    deadline = t0 + duration
    for sock in socks:
        start(sock)
    while (left := deadline - time.perf_counter()) > 0:
        for key, _ in selector.select(left):
            conn: _Conn = key.data
            try:
                if conn.length is None:
                    data = conn.sock.recv(64 * 1024)
                    got = len(data)
                    if data:
                        conn.head += data
                        end = conn.head.find(b"\r\n\r\n")
                        if end >= 0:
                            head = parse_head(conn.head[:end])
                            statuses[str(head.status)] += 1
                            conn.length = head.length if head.length is not None else -1
                            conn.body = len(conn.head) - end - 4
                            moved += conn.body
                else:
                    got = conn.sock.recv_into(DISCARD, len(DISCARD), socket.MSG_TRUNC)
                    conn.body += got
                    moved += got
            except BlockingIOError:
                continue
            except ConnectionError:
                statuses["reset"] += 1
                got = 0
            if got:
                continue
            # The server closed this connection: one download is over; the client starts the next one.
            selector.unregister(conn.sock)
            conn.sock.close()
            if conn.length is None:
                statuses["closed before headers"] += 1
            elif conn.length >= 0 and conn.body < conn.length:
                truncated += 1
            else:
                completed += 1
            start(socket.create_connection((HOST, port), timeout=10))
    elapsed = time.perf_counter() - t0
    client_cpu = time.thread_time() - cpu0
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return Swarm(clients, elapsed, moved, completed, truncated, dict(statuses), client_cpu)


def stall(port: int, path: str, clients: int, rcvbuf: int) -> tuple[list[socket.socket], collections.Counter[str]]:
    """Open ``clients`` connections with a small receive buffer, ask each for ``path``, read only the headers."""
    request = request_bytes(path)
    socks: list[socket.socket] = []
    statuses: collections.Counter[str] = collections.Counter()
    try:
        for _ in range(clients):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            # Before connect, so the window the client advertises is small from the first segment on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(10)
            sock.connect((HOST, port))
            sock.sendall(request)
        for sock in socks:
            try:
                head, _ = read_head(sock)
                statuses[str(head.status)] += 1
            except (OSError, IncompleteResponse):
                statuses["no headers"] += 1
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks, statuses


# -- servers


@contextlib.contextmanager
def serving(contender: str, root: Path, log_dir: Path) -> Iterator[Server]:
    launch_dir = Path(tempfile.mkdtemp(prefix=f"{contender}-", dir=log_dir))
    port = free_port()
    launch = file_apps.CONTENDERS[contender].launch(port, root, launch_dir)
    with common.running(contender, launch.command, log_dir, port=port, env=launch.env) as server:
        yield server


def cpu_seconds(server: Server) -> float:
    """``server.cpu_seconds()``, under the name benchmarks/proxy.py imports."""
    return server.cpu_seconds()


class Peak:
    """The server's peak RSS over a block: sampled every 10 ms, and the kernel's high-water mark when it has one."""

    def __init__(self, server: Server, interval: float = common.RSS_INTERVAL) -> None:
        self.server = server
        self.sampler = RssSampler(server, interval)
        self.value = 0
        self.hwm = False

    def __enter__(self) -> Peak:
        self.hwm = self.server.reset_peak()
        self.sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.__exit__()
        kernel = self.server.kernel_peak() if self.hwm else None
        self.value = max(self.sampler.peak, kernel or 0)


def warm_up(port: int, name: str) -> None:
    """A small ranged download first: the server imports and compiles what a response needs before it is timed."""
    download(port, f"/{name}", headers={"Range": "bytes=0-1048575"})


# -- the scenarios


@dataclasses.dataclass
class Single:
    contender: str
    runs: int
    gbps: list[float]
    """Per run, the discarding client."""
    gbps_copy: list[float]
    """Per run, the copying client."""
    headers_ms: float
    server_cpu: float
    """Median server CPU seconds per GB sent (discarding client): the cost, whatever the machine's noise."""
    rss_idle: int
    rss_peak: int
    statuses: dict[str, int]

    @property
    def median(self) -> float:
        return statistics.median(self.gbps)


def single(contender: str, file: Path, runs: int, log_dir: Path, say: Say) -> Single:
    path = f"/{file.name}"
    fast: list[Download] = []
    copied: list[Download] = []
    cpu: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    with serving(contender, file.parent, log_dir) as server:
        warm_up(server.port, file.name)
        rss_idle = server.idle_rss()
        with Peak(server) as peak:
            for _ in range(runs):
                # The two clients alternate, so both see the same background load.
                cpu0 = server.cpu_seconds()
                fast.append(download(server.port, path))
                cpu.append((server.cpu_seconds() - cpu0) / (fast[-1].body_bytes / GB))
                copied.append(download(server.port, path, copy=True))
                say(
                    f"  single      {contender:<14} {fast[-1].gbps:5.2f} GB/s  (copying client {copied[-1].gbps:5.2f}),"
                    f" server CPU {cpu[-1]:.3f} s/GB"
                )
    for result in fast + copied:
        statuses[str(result.status)] += 1
        if result.status != 200 or result.body_bytes != file.stat().st_size:
            raise IncompleteResponse(f"{contender}: status {result.status}, {result.body_bytes} bytes")
    return Single(
        contender,
        runs,
        [d.gbps for d in fast],
        [d.gbps for d in copied],
        statistics.median(d.headers_time for d in fast) * 1000,
        statistics.median(cpu),
        rss_idle,
        peak.value,
        dict(statuses),
    )


@dataclasses.dataclass
class Concurrent:
    contender: str
    swarm: Swarm
    server_cpu: float
    """Server CPU seconds over the run."""
    rss_idle: int
    rss_peak: int
    wrk_gbps: float | None = None
    """With ``--wrk``: wrk's own count of bytes read over its run time, on the same server after the swarm."""

    @property
    def cpu_per_gb(self) -> float:
        return self.server_cpu / (self.swarm.body_bytes / GB)


def concurrent(
    contender: str, file: Path, clients: int, duration: float, log_dir: Path, say: Say, *, with_wrk: bool = False
) -> Concurrent:
    with serving(contender, file.parent, log_dir) as server:
        warm_up(server.port, file.name)
        rss_idle = server.idle_rss()
        cpu0 = server.cpu_seconds()
        with Peak(server) as peak:
            result = swarm(server.port, f"/{file.name}", clients, duration)
        server_cpu = server.cpu_seconds() - cpu0
        wrk_gbps = wrk(server.port, f"/{file.name}", clients, duration) if with_wrk else None
    wrk_text = f", wrk {wrk_gbps:.2f} GB/s" if wrk_gbps is not None else ""
    say(
        f"  {clients} clients  {contender:<14} {result.gbps:5.2f} GB/s  {result.completed} complete,"
        f" peak RSS {peak.value / MB:.0f} MB, server CPU {server_cpu:.1f} s, client CPU {result.client_cpu:.1f} s"
        + wrk_text
    )
    if result.truncated:
        raise IncompleteResponse(f"{contender}: {result.truncated} responses ended before their Content-Length")
    return Concurrent(contender, result, server_cpu, rss_idle, peak.value, wrk_gbps)


_WRK_READ = re.compile(r"in ([\d.]+)(\w+), ([\d.]+)(\w*)B read")
_WRK_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_WRK_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(port: int, path: str, clients: int, duration: float) -> float | None:
    """wrk's aggregate rate, from its totals (it counts every byte read, also of responses cut off at the end)."""
    binary = shutil.which("wrk")
    if binary is None:
        return None
    threads = min(clients, os.cpu_count() or 1)
    out = subprocess.run(
        [binary, f"-c{clients}", f"-t{threads}", f"-d{max(1, round(duration))}s", f"http://{HOST}:{port}{path}"],
        capture_output=True,
        text=True,
    ).stdout
    match = _WRK_READ.search(out)
    if match is None:
        return None
    seconds = float(match[1]) * _WRK_TIME[match[2]]
    return float(match[3]) * _WRK_UNITS[match[4]] / seconds / GB


@dataclasses.dataclass
class Stalled:
    contender: str
    clients: int
    statuses: dict[str, int]
    rss_idle: int
    rss_start: int
    """Once every client has its headers."""
    rss_peak: int
    rss_end: int
    """At the end of the hold, before the clients close."""
    rss_after: int
    """A second after the clients closed."""
    after_status: int | None
    after_bytes: int
    after_ms: float

    @property
    def answers(self) -> bool:
        return self.after_status == 206 and self.after_bytes == 1 << 20


def stalled(contender: str, file: Path, clients: int, hold: float, rcvbuf: int, log_dir: Path, say: Say) -> Stalled:
    with serving(contender, file.parent, log_dir) as server:
        warm_up(server.port, file.name)
        rss_idle = server.idle_rss()
        with Peak(server, interval=0.1) as peak:
            socks, statuses = stall(server.port, f"/{file.name}", clients, rcvbuf)
            try:
                rss_start = server.rss()
                time.sleep(hold)
                rss_end = server.rss()
            finally:
                for sock in socks:
                    sock.close()
        time.sleep(1.0)
        rss_after = server.rss()
        # The server must still serve: a ranged request for the first MiB, within a few seconds.
        after: Download | None = None
        with contextlib.suppress(OSError, IncompleteResponse):
            after = download(server.port, f"/{file.name}", headers={"Range": "bytes=0-1048575"})
    result = Stalled(
        contender,
        clients,
        dict(statuses),
        rss_idle,
        rss_start,
        peak.value,
        rss_end,
        rss_after,
        after.status if after else None,
        after.body_bytes if after else 0,
        after.wall * 1000 if after else float("nan"),
    )
    say(
        f"  {clients} stalled {contender:<14} RSS start {rss_start / MB:.0f} MB, peak {peak.value / MB:.0f} MB,"
        f" end {rss_end / MB:.0f} MB, after close {rss_after / MB:.0f} MB; then {result.after_status}"
    )
    return result


@dataclasses.dataclass
class Ranges:
    contender: str
    header_bytes: int
    status: int
    content_type: str
    body_bytes: int
    parts: int | None
    headers_ms: float
    """Median over the runs."""
    whole_ms: float
    rss_peak: int


def ranges_header(count: int) -> str:
    """``count`` one-byte ranges with one-byte gaps: ``bytes=0-0,2-2,4-4,...``."""
    return "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 2 * count, 2))


def ranges(contender: str, file: Path, count: int, runs: int, log_dir: Path, say: Say) -> Ranges:
    header = ranges_header(count)
    with serving(contender, file.parent, log_dir) as server:
        warm_up(server.port, file.name)
        results: list[Download] = []
        with Peak(server) as peak:
            for _ in range(runs):
                try:
                    results.append(download(server.port, f"/{file.name}", headers={"Range": header}, keep=True))
                except (OSError, IncompleteResponse) as exc:
                    # Some servers refuse a header this long by closing; that is an answer too.
                    say(f"  ranges      {contender:<14} {type(exc).__name__}: {exc}")
                    results.append(Download(0, 0, float("nan"), float("nan"), 0.0, f"({type(exc).__name__})"))
    last = results[-1]
    result = Ranges(
        contender,
        len(header),
        last.status,
        last.content_type,
        last.body_bytes,
        last.parts,
        statistics.median(d.headers_time for d in results) * 1000,
        statistics.median(d.wall for d in results) * 1000,
        peak.value,
    )
    say(
        f"  ranges      {contender:<14} {result.status} {result.content_type[:40]!r} {result.body_bytes:,} bytes,"
        f" headers {result.headers_ms:.1f} ms, whole {result.whole_ms:.1f} ms"
    )
    return result


# -- the file


def data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "chute-bench"


def ensure_file(folder: Path, size: int, say: Say) -> Path:
    """A file of ``size`` random bytes in ``folder``, made once and reused by later runs."""
    path = folder / f"random-{size // MiB}MiB.bin"
    if path.is_file() and path.stat().st_size == size:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    say(f"writing {size / GiB:g} GiB of random bytes to {path} (once)")
    partial = path.with_suffix(".part")
    piece = 64 * MiB
    with partial.open("wb") as out:
        for offset in range(0, size, piece):
            out.write(os.urandom(min(piece, size - offset)))
    partial.replace(path)
    return path


def read_through(path: Path) -> float:
    """Read the whole file once so every contender finds it in the page cache; returns the read rate in GB/s."""
    buffer = memoryview(bytearray(16 * MiB))
    t0 = time.perf_counter()
    total = 0
    with path.open("rb", buffering=0) as source:
        while got := source.readinto(buffer):
            total += got
    return total / (time.perf_counter() - t0) / GB


# -- the run


@dataclasses.dataclass
class Results:
    single: list[Single] = dataclasses.field(default_factory=list)
    concurrent: list[Concurrent] = dataclasses.field(default_factory=list)
    stalled: list[Stalled] = dataclasses.field(default_factory=list)
    ranges: list[Ranges] = dataclasses.field(default_factory=list)


def compare_clients(file: Path, log_dir: Path, say: Say) -> dict[str, Any]:
    """The three clients on nginx, the fastest server: the one that moves the most bytes is the cheapest."""
    out: dict[str, Any] = {}
    path = f"/{file.name}"
    clients: dict[str, Callable[[int], Download]] = {
        "socket, MSG_TRUNC": lambda port: download(port, path),
        "socket, recv_into 4 MiB": lambda port: download(port, path, copy=True),
    }
    if shutil.which("curl"):
        clients["curl -o /dev/null"] = lambda port: curl(port, path)
    with serving(BASELINE, file.parent, log_dir) as server:
        warm_up(server.port, file.name)
        runs: dict[str, list[Download]] = {name: [] for name in clients}
        for _ in range(3):
            for name, client in clients.items():
                runs[name].append(client(server.port))
    for name, results in runs.items():
        gbps = statistics.median(d.gbps for d in results)
        cpu = statistics.median(d.client_cpu for d in results)
        out[name] = {"gbps": gbps, "client_cpu": cpu}
        cpu_text = "" if cpu != cpu else f", client CPU {cpu:.2f} s"  # curl's own CPU time is not measured
        say(f"  client {name:<24} {gbps:5.2f} GB/s from {BASELINE}{cpu_text}")
    return out


def run(args: argparse.Namespace, file: Path, log_dir: Path, say: Say) -> Results:
    results = Results()
    contenders: list[str] = args.contenders
    one_per_server = [c for c in contenders if c != "nginx-auto"]  # its workers only matter with many clients
    for contender in contenders:
        results.single.append(single(contender, file, args.repeat, log_dir, say))
    for contender in contenders:
        results.concurrent.append(
            concurrent(contender, file, args.clients, args.duration, log_dir, say, with_wrk=args.wrk)
        )
    for contender in one_per_server:
        results.stalled.append(stalled(contender, file, args.stalled, args.hold, args.rcvbuf, log_dir, say))
    for contender in one_per_server:
        results.ranges.append(ranges(contender, file, RANGE_COUNT, args.range_runs, log_dir, say))
    return results


def targets(results: Results, args: argparse.Namespace) -> list[Target]:
    out: list[Target] = []
    nginx_single = by_contender(results.single, BASELINE)
    nginx_many = by_contender(results.concurrent, BASELINE)
    for chute in CHUTE:
        server = file_apps.CONTENDERS[chute].server.split(", ")[1]
        one: Single | None = by_contender(results.single, chute)
        if one is not None and nginx_single is not None:
            ratio = one.median / nginx_single.median
            out.append(
                Target(
                    f"1 client, {server}: chute / nginx throughput",
                    f">= {SINGLE_RATIO:g}x",
                    f"{ratio:.2f}x ({one.median:.2f} / {nginx_single.median:.2f} GB/s)",
                    ratio >= SINGLE_RATIO,
                )
            )
        many: Concurrent | None = by_contender(results.concurrent, chute)
        if many is not None and nginx_many is not None:
            ratio = many.swarm.gbps / nginx_many.swarm.gbps
            out.append(
                Target(
                    f"{args.clients} clients, {server}: chute / nginx aggregate throughput",
                    f">= {CONCURRENT_RATIO:g}x",
                    f"{ratio:.2f}x ({many.swarm.gbps:.2f} / {nginx_many.swarm.gbps:.2f} GB/s)",
                    ratio >= CONCURRENT_RATIO,
                )
            )
            out.append(
                Target(
                    f"{args.clients} clients, {server}: chute server peak RSS",
                    f"<= {RSS_LIMIT / MB:g} MB",
                    f"{many.rss_peak / MB:.0f} MB",
                    many.rss_peak <= RSS_LIMIT,
                )
            )
        held: Stalled | None = by_contender(results.stalled, chute)
        if held is not None:
            growth = held.rss_end - held.rss_start
            out.append(
                Target(
                    f"{held.clients} stalled clients, {server}: chute peak RSS, and end - start",
                    f"<= {RSS_LIMIT / MB:g} MB, <= {FLAT_GROWTH / MB:g} MB",
                    f"{held.rss_peak / MB:.0f} MB, {growth / MB:+.1f} MB",
                    held.rss_peak <= RSS_LIMIT and growth <= FLAT_GROWTH,
                )
            )
            out.append(
                Target(
                    f"{held.clients} stalled clients, {server}: answers once they close",
                    "206, 1 MiB",
                    f"{held.after_status}, {held.after_bytes:,} bytes, {held.after_ms:.0f} ms",
                    held.answers,
                )
            )
        many_ranges: Ranges | None = by_contender(results.ranges, chute)
        if many_ranges is not None:
            out.append(
                Target(
                    f"{RANGE_COUNT:,} one-byte ranges, {server}: headers and whole response",
                    f"<= {RANGES_TIME * 1000:g} ms",
                    f"{many_ranges.headers_ms:.1f} / {many_ranges.whole_ms:.1f} ms"
                    f" ({many_ranges.status}, {many_ranges.body_bytes:,} bytes)",
                    many_ranges.whole_ms <= RANGES_TIME * 1000,  # the headers come first: their time is less
                )
            )
    return out


# -- output


def _statuses(counter: dict[str, int]) -> str:
    return " ".join(f"{status}x{count}" for status, count in sorted(counter.items()))


def _server(contender: str) -> str:
    return file_apps.CONTENDERS[contender].server


def single_table(results: Results, size: int) -> Table:
    table = common.table(
        f"One client downloads the {size / GiB:g} GiB file",
        ("contender", "server", "runs"),
        (
            "GB/s (min-max)",
            "x nginx",
            "copying client GB/s",
            "headers ms",
            "server CPU s/GB",
            "RSS idle MB",
            "RSS peak MB",
            "statuses",
        ),
    )
    nginx = by_contender(results.single, BASELINE)
    for r in results.single:
        table.add_row(
            r.contender,
            _server(r.contender),
            str(r.runs),
            f"{r.median:.2f} ({min(r.gbps):.2f}-{max(r.gbps):.2f})",
            f"{r.median / nginx.median:.2f}" if nginx else "",
            f"{statistics.median(r.gbps_copy):.2f}",
            f"{r.headers_ms:.2f}",
            f"{r.server_cpu:.3f}",
            f"{r.rss_idle / MB:.0f}",
            f"{r.rss_peak / MB:.0f}",
            _statuses(r.statuses),
        )
    return table


def concurrent_table(results: Results, args: argparse.Namespace) -> Table:
    table = common.table(
        f"{args.clients} clients download the file at once for {args.duration:g} s",
        ("contender", "server"),
        (
            "GB/s",
            "x nginx",
            "GB moved",
            "complete",
            "statuses",
            "server CPU s/GB",
            "client CPU s",
            "RSS idle MB",
            "RSS peak MB",
            *(("wrk GB/s",) if args.wrk else ()),
        ),
    )
    nginx = by_contender(results.concurrent, BASELINE)
    for r in results.concurrent:
        table.add_row(
            r.contender,
            _server(r.contender),
            f"{r.swarm.gbps:.2f}",
            f"{r.swarm.gbps / nginx.swarm.gbps:.2f}" if nginx else "",
            f"{r.swarm.body_bytes / GB:.1f}",
            str(r.swarm.completed),
            _statuses(r.swarm.statuses),
            f"{r.cpu_per_gb:.3f}",
            f"{r.swarm.client_cpu:.1f}",
            f"{r.rss_idle / MB:.0f}",
            f"{r.rss_peak / MB:.0f}",
            *((f"{r.wrk_gbps:.2f}" if r.wrk_gbps is not None else "",) if args.wrk else ()),
        )
    return table


def stalled_table(results: Results, args: argparse.Namespace) -> Table:
    table = common.table(
        f"{args.stalled} clients read the headers, then nothing for {args.hold:g} s (SO_RCVBUF {args.rcvbuf})",
        ("contender", "server"),
        (
            "statuses",
            "RSS idle MB",
            "start MB",
            "peak MB",
            "end MB",
            "after close MB",
            "then: status, bytes, ms",
        ),
    )
    for r in results.stalled:
        table.add_row(
            r.contender,
            _server(r.contender),
            _statuses(r.statuses),
            f"{r.rss_idle / MB:.0f}",
            f"{r.rss_start / MB:.0f}",
            f"{r.rss_peak / MB:.0f}",
            f"{r.rss_end / MB:.0f}",
            f"{r.rss_after / MB:.0f}",
            f"{r.after_status}, {r.after_bytes:,}, {r.after_ms:.0f}",
        )
    return table


def ranges_table(results: Results, args: argparse.Namespace) -> Table:
    header = results.ranges[0].header_bytes if results.ranges else 0
    table = common.table(
        f"One request for {RANGE_COUNT:,} one-byte ranges (a {header:,}-byte Range header), "
        f"median of {args.range_runs}",
        ("contender", "server", "status", "content type"),
        ("body bytes", "parts", "headers ms", "whole ms", "RSS peak MB"),
    )
    for r in results.ranges:
        table.add_row(
            r.contender,
            _server(r.contender),
            str(r.status),
            r.content_type.split(";")[0],
            f"{r.body_bytes:,}",
            "" if r.parts is None else f"{r.parts:,}",
            f"{r.headers_ms:.1f}",
            f"{r.whole_ms:.1f}",
            f"{r.rss_peak / MB:.0f}",
        )
    return table


def environment() -> dict[str, Any]:
    extra: dict[str, Any] = {}
    binary = file_apps.nginx_binary()
    if binary is not None:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True)
        extra["nginx"] = (out.stderr or out.stdout).strip()
    return common.environment(
        ("chute", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "granian", "anyio"), extra
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-files", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="single-client downloads per contender (medians)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent downloading clients")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds the concurrent clients download")
    parser.add_argument("--stalled", type=int, default=256, help="clients that stop reading after the headers")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the stalled clients are held")
    parser.add_argument("--rcvbuf", type=int, default=4096, help="SO_RCVBUF of the stalled clients")
    parser.add_argument("--range-runs", type=int, default=3, help="requests with 5,000 ranges per contender")
    parser.add_argument(
        "--contenders",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=list(file_apps.DEFAULT),
        help=f"comma-separated, from {', '.join(file_apps.CONTENDERS)} (default {','.join(file_apps.DEFAULT)})",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where the file is kept (~/.cache/chute-bench)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 256 MiB, 1 run, 16 clients for 3 s, 64 stalled for 3 s"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--no-client-check", action="store_true", help="skip comparing the clients on nginx")
    parser.add_argument(
        "--wrk", action="store_true", help="also run wrk on each server after the concurrent clients, for comparison"
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat, args.range_runs = 256, 1, 1
        args.clients, args.duration, args.stalled, args.hold = 16, 3.0, 64, 3.0
    unknown = [c for c in args.contenders if c not in file_apps.CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if not file_apps.granian_available():
        args.contenders = [c for c in args.contenders if not c.endswith("-granian")]
    if file_apps.nginx_binary() is None:
        args.contenders = [c for c in args.contenders if not c.startswith("nginx")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console, say = console_and_say()
    started = time.monotonic()
    size = args.size_mib * MiB
    file = ensure_file(args.data_dir or data_dir(), size, say)
    rate = read_through(file)
    say(
        f"chute file benchmark: {file} ({size / GiB:g} GiB), read through at {rate:.1f} GB/s; {os.cpu_count()} CPUs;"
        f" contenders {', '.join(args.contenders)}"
    )
    if BASELINE not in args.contenders:
        say("[yellow]nginx is not among the contenders: the ratios cannot be computed[/]")
    with tempfile.TemporaryDirectory(prefix="chute-bench-files-") as tmp:
        log_dir = Path(tmp)
        check = args.no_client_check or BASELINE not in args.contenders
        clients = {} if check else compare_clients(file, log_dir, say)
        results = run(args, file, log_dir, say)
    checks = targets(results, args)
    console.print(single_table(results, size))
    console.print(concurrent_table(results, args))
    console.print(stalled_table(results, args))
    console.print(ranges_table(results, args))
    console.print(
        "GB/s: 10^9 bytes of body per second, client-side; MB: 10^6 bytes; RSS: the server's resident memory summed"
        " over its processes (nginx master and workers, granian supervisor and worker), idle after a warm-up request"
        " and at its peak (sampled, and the kernel's per-process high-water mark); statuses: status x responses."
    )
    return conclude(
        console,
        checks,
        say,
        args,
        started=started,
        environment=environment(),
        file={"path": str(file), "bytes": size},
        clients=clients,
        results=dataclasses.asdict(results),
    )


if __name__ == "__main__":
    sys.exit(main())
