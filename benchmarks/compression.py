"""Streaming compression: codecs and levels in process, an NDJSON export over HTTP, and live events' latency.

Run it with ``./scripts/bench-compression`` (``--help`` for the options). Three measurements, in one run:

1. **Codecs in process.** Each codec and level of :data:`LEVELS` compresses chute's own export bytes (the
   embedded dataset's orders, encoded by ``NDJSONEncoder`` and ``CSVEncoder``) the way
   :class:`~chute.compression.CompressionMiddleware` does: one ``compress`` + ``flush`` per 64 KiB chunk. Each
   runs over the whole body or for ``--budget`` seconds, whichever ends first (slow levels are measured on a
   prefix, labelled with the MB they saw). Ratio is compressed over identity bytes; MB/s counts identity bytes
   per second of one core. The defaults of :data:`chute.compression.DEFAULT_LEVELS` are chosen from this table.
2. **An export over HTTP.** One uvicorn process (uvloop, ``chute.protocol.HttpToolsProtocol``, one worker)
   serves ``RecordStream`` NDJSON over a batched source of ``--rows`` synthetic records (``benchmarks.apps``: the
   fastest source there is, so the cost of compression shows the most) at ``/plain`` with no middleware and at
   ``/packed`` through the middleware. The client reads the whole response from a raw socket into memory and
   only then (outside the timing) undoes the chunked framing, decompresses, and checks every line. Identity and
   each coding alternate, ``--repeat`` times; medians. Targets at the default gzip level: throughput >= 0.7x of
   identity, size <= 0.25x.
3. **Live events.** ``EventStream`` through the middleware with ``compress_live=True``: the server's source
   yields an event every ``--interval`` seconds carrying ``time.time_ns()``; the client (httpx ``iter_raw``)
   decompresses what arrives at once and takes arrival minus that time as the event's latency. Target: p99 <=
   50 ms with each coding.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import socket
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import brotli  # type: ignore[import-untyped]
import httpx
import uvicorn
import zstandard
from rich.table import Table
from starlette.types import Receive, Scope, Send

from benchmarks import apps, common
from benchmarks.common import (
    HOST,
    MB,
    MiB,
    Say,
    Target,
    conclude,
    console_and_say,
    free_port,
    running,
)
from chute import CSVEncoder, EventStream, NDJSONEncoder, RecordStream
from chute.chunker import DEFAULT_TARGET
from chute.compression import DEFAULT_LEVELS, CompressionMiddleware, CompressionPolicy, compressor
from chute.encoders.sse import Event
from chute.protocol import HttpToolsProtocol
from chute.service import dataset

LEVELS: dict[str, tuple[int, ...]] = {"gzip": (1, 3, 6, 9), "br": (0, 1, 3, 5, 11), "zstd": (1, 3, 9, 19)}
THROUGHPUT_RATIO = 0.7
SIZE_RATIO = 0.25
LATENCY_P99 = 0.050

# -- 1. codecs in process


def export_bytes(rows: int) -> dict[str, list[bytes]]:
    """The embedded dataset's first ``rows`` orders as NDJSON and CSV, in ~64 KiB chunks as RecordStream sends."""
    _, orders = dataset.generate(rows)
    columns = ["id", "customer_id", "customer", "country", "product", "quantity", "unit_price", "total"]
    columns += ["status", "created_at"]
    records = list(orders)
    out: dict[str, list[bytes]] = {}
    for name, encoder in (("NDJSON", NDJSONEncoder(columns)), ("CSV", CSVEncoder(columns))):
        body = b"".join(encoder.encode(records[i : i + 4096]) for i in range(0, len(records), 4096))
        out[name] = [body[i : i + DEFAULT_TARGET] for i in range(0, len(body), DEFAULT_TARGET)]
    return out


@dataclasses.dataclass
class CodecResult:
    body: str
    coding: str
    level: int
    ratio: float
    mb_per_s: float
    measured_mb: float
    total_mb: float

    @property
    def default(self) -> bool:
        return DEFAULT_LEVELS[self.coding] == self.level


def compress_pass(chunks: Sequence[bytes], coding: str, level: int, deadline: float) -> tuple[int, int, float]:
    """Identity bytes, compressed bytes and seconds of one pass over ``chunks``, cut short at ``deadline``."""
    packer = compressor(coding, level)
    size_in = size_out = 0
    t0 = time.perf_counter()
    for chunk in chunks:
        size_out += len(packer.compress(chunk)) + len(packer.flush())
        size_in += len(chunk)
        if time.perf_counter() > deadline:
            break
    size_out += len(packer.finish())
    return size_in, size_out, time.perf_counter() - t0


def measure_codec(body: str, chunks: Sequence[bytes], coding: str, level: int, budget: float) -> CodecResult:
    """The best of up to three passes that fit in ``budget`` seconds (a slow level: part of one pass), so that
    the other engineers' work on a shared machine slows the table less."""
    deadline = time.perf_counter() + budget
    size_in, size_out, best = compress_pass(chunks, coding, level, deadline)
    total = sum(map(len, chunks))
    for _ in range(2):
        if size_in < total or time.perf_counter() + best > deadline:
            break
        best = min(best, compress_pass(chunks, coding, level, math.inf)[2])
    return CodecResult(body, coding, level, size_out / size_in, size_in / best / MB, size_in / MB, total / MB)


def codecs(rows: int, budget: float, say: Say) -> list[CodecResult]:
    results = []
    for body, chunks in export_bytes(rows).items():
        for coding, levels in LEVELS.items():
            for level in levels:
                result = measure_codec(body, chunks, coding, level, budget)
                say(f"  {body:<6} {coding:<4} {level:>2}  ratio {result.ratio:.3f}  {result.mb_per_s:7.1f} MB/s")
                results.append(result)
    return results


def codecs_table(results: Sequence[CodecResult]) -> Table:
    table = Table(title="Codecs in process: one compress + flush per 64 KiB chunk, one core")
    for name in ("body", "coding", "level"):
        table.add_column(name)
    for name in ("ratio", "MB/s", "measured MB"):
        table.add_column(name, justify="right")
    table.add_column("default")
    for r in results:
        measured = f"{r.measured_mb:.1f}" + ("" if r.measured_mb >= r.total_mb else f" of {r.total_mb:.1f}")
        table.add_row(r.body, r.coding, str(r.level), f"{r.ratio:.3f}", f"{r.mb_per_s:.1f}", measured, "*" * r.default)
    return table


# -- the server of 2 and 3


def server_app(interval: float) -> Callable[[Scope, Receive, Send], Any]:
    """``/plain?rows=N`` and ``/packed?rows=N`` (the same export, the second through the middleware),
    ``/events?count=N`` (a feed through the middleware, live compression on) and ``/healthz``."""

    async def export(scope: Scope, receive: Receive, send: Send) -> None:
        rows = int(scope["query_string"].decode().partition("=")[2] or 0)
        response = RecordStream(apps.ndjson_batches(rows), format="ndjson", batched=True)
        await response(scope, receive, send)

    async def events(scope: Scope, receive: Receive, send: Send) -> None:
        count = int(scope["query_string"].decode().partition("=")[2] or 0)

        async def feed() -> AsyncIterator[Event]:
            for seq in range(count):
                yield Event(data=f"{seq} {time.time_ns()}")
                await anyio.sleep(interval)

        await EventStream(feed(), retry=None)(scope, receive, send)

    packed = CompressionMiddleware(export)
    live = CompressionMiddleware(events, policy=CompressionPolicy(compress_live=True))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/plain":
            await export(scope, receive, send)
        elif path == "/packed":
            await packed(scope, receive, send)
        elif path == "/events":
            await live(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    return app


def serve(port: int, interval: float) -> None:
    uvicorn.run(
        server_app(interval),
        host=HOST,
        port=port,
        loop="uvloop",
        http=HttpToolsProtocol,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


# -- 2. an export over HTTP


@dataclasses.dataclass
class Fetched:
    wall: float
    wire_bytes: int
    body_bytes: int
    lines: int


DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": lambda data: zlib.decompress(data, 16 + zlib.MAX_WBITS),
    "br": lambda data: bytes(brotli.decompress(data)),
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body; raises unless the terminator is there (a truncated body fails the run)."""
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(parts)
        parts.append(data[eol + 2 : eol + 2 + size])
        pos = eol + 4 + size


def fetch(port: int, path: str, coding: str) -> Fetched:
    """GET ``path`` accepting ``coding``; the wall time covers the bytes' arrival only, decoding comes after."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: {coding}\r\nConnection: close\r\n\r\n"
    # One fixed buffer and one copy per read: the client must cost identity (8x the bytes) no more than a codec.
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    blocks: list[bytes] = []
    with socket.create_connection((HOST, port), timeout=300) as sock:
        t0 = time.perf_counter()
        sock.sendall(request.encode())
        while got := sock.recv_into(view):
            blocks.append(bytes(view[:got]))
        wall = time.perf_counter() - t0
    head, _, raw = b"".join(blocks).partition(b"\r\n\r\n")
    headers = head.decode("latin-1").lower()
    if not headers.startswith("http/1.1 200"):
        raise RuntimeError(f"{path}: {headers.splitlines()[0]}")
    expected = "" if coding == "identity" else f"content-encoding: {coding}"
    if expected not in headers or (coding == "identity" and "content-encoding" in headers):
        raise RuntimeError(f"{path} accepting {coding}: unexpected headers {headers!r}")
    wire = dechunk(raw)
    body = DECODERS[coding](wire)
    return Fetched(wall, len(wire), len(body), body.count(b"\n"))


@dataclasses.dataclass
class HttpResult:
    coding: str
    level: int | None
    wall: float
    wall_min: float
    wall_max: float
    wire_bytes: int
    body_bytes: int


def export_over_http(port: int, rows: int, repeat: int, say: Say) -> list[HttpResult]:
    cases = [("identity", "/plain"), *((coding, "/packed") for coding in ("gzip", "br", "zstd"))]
    for coding, path in cases:  # warm-up: imports, thread pool, code paths
        fetch(port, f"{path}?rows=10000", coding)
    walls: dict[str, list[float]] = {coding: [] for coding, _ in cases}
    sizes: dict[str, Fetched] = {}
    for _ in range(repeat):
        for coding, path in cases:  # interleaved: identity and each coding see the same background load
            got = fetch(port, f"{path}?rows={rows}", coding)
            if got.lines != rows:
                raise RuntimeError(f"{coding}: {got.lines} lines, expected {rows}")
            walls[coding].append(got.wall)
            sizes[coding] = got
            say(f"  {coding:<8} {got.wall:6.3f} s  {got.wire_bytes / MB:6.1f} MB on the wire")
    return [
        HttpResult(
            coding,
            DEFAULT_LEVELS.get(coding),
            statistics.median(walls[coding]),
            min(walls[coding]),
            max(walls[coding]),
            sizes[coding].wire_bytes,
            sizes[coding].body_bytes,
        )
        for coding, _ in cases
    ]


def http_table(results: Sequence[HttpResult], rows: int) -> Table:
    table = Table(title=f"NDJSON export of {rows:,} rows over HTTP (uvicorn, uvloop, chute.protocol, 1 worker)")
    table.add_column("coding")
    for name in ("level", "time s (min-max)", "wire MB", "body MB/s", "x identity time", "size ratio"):
        table.add_column(name, justify="right")
    identity = results[0]
    for r in results:
        table.add_row(
            r.coding,
            "" if r.level is None else str(r.level),
            f"{r.wall:.3f} ({r.wall_min:.3f}-{r.wall_max:.3f})",
            f"{r.wire_bytes / MB:.1f}",
            f"{r.body_bytes / r.wall / MB:.1f}",
            f"{identity.wall / r.wall:.2f}",
            f"{r.wire_bytes / r.body_bytes:.3f}",
        )
    return table


# -- 3. live events


def event_latencies(port: int, coding: str, count: int) -> list[float]:
    """Seconds from each event's publication to its arrival, decoded, at the client."""
    decode: Callable[[bytes], bytes] = {
        "gzip": zlib.decompressobj(16 + zlib.MAX_WBITS).decompress,
        "br": brotli.Decompressor().process,
        "zstd": zstandard.ZstdDecompressor().decompressobj().decompress,
    }[coding]
    latencies: list[float] = []
    text = b""
    url = f"http://{HOST}:{port}/events?count={count}"
    with httpx.stream("GET", url, headers={"accept-encoding": coding}, timeout=30) as response:
        if response.headers.get("content-encoding") != coding:
            raise RuntimeError(f"events accepting {coding}: {response.headers}")
        for raw in response.iter_raw():
            arrived = time.time_ns()
            text += decode(raw)
            *complete, text = text.split(b"\n\n")
            for event in complete:
                published = int(event.removeprefix(b"data: ").split()[1])
                latencies.append((arrived - published) / 1e9)
            if len(latencies) == count:
                break
    if len(latencies) != count:
        raise RuntimeError(f"{coding}: {len(latencies)} events of {count}")
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def live_table(latencies: dict[str, list[float]]) -> Table:
    table = Table(title="Live events through the middleware (compress_live=True), publication to decoded arrival")
    table.add_column("coding")
    for name in ("events", "p50 ms", "p99 ms", "max ms"):
        table.add_column(name, justify="right")
    for coding, values in latencies.items():
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        table.add_row(coding, str(len(values)), f"{p50:.2f}", f"{p99:.2f}", f"{max(values) * 1000:.2f}")
    return table


# -- the run


def targets(http: Sequence[HttpResult], latencies: dict[str, list[float]]) -> list[Target]:
    out = []
    identity = next(r for r in http if r.coding == "identity")
    gzip = next(r for r in http if r.coding == "gzip")
    level = DEFAULT_LEVELS["gzip"]
    speed = identity.wall / gzip.wall
    out.append(
        Target(
            f"gzip {level} export throughput vs identity",
            f">= {THROUGHPUT_RATIO}x",
            f"{speed:.2f}x",
            speed >= THROUGHPUT_RATIO,
        )
    )
    size = gzip.wire_bytes / gzip.body_bytes
    out.append(Target(f"gzip {level} export size vs identity", f"<= {SIZE_RATIO}", f"{size:.3f}", size <= SIZE_RATIO))
    for coding, values in latencies.items():
        p99 = percentile(values, 0.99)
        out.append(
            Target(
                f"live events through {coding}: p99 latency",
                f"<= {LATENCY_P99 * 1000:g} ms",
                f"{p99 * 1000:.2f} ms",
                p99 <= LATENCY_P99,
            )
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-compression", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--codec-rows", type=int, default=200_000, help="dataset orders compressed in process")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds at most per codec and level in process")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the export over HTTP")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each coding over HTTP; medians are reported")
    parser.add_argument("--events", type=int, default=200, help="live events per coding")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between live events")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k codec rows, 100k rows, 1 run, 50 events")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--serve", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.codec_rows, args.rows, args.repeat, args.events, args.budget = 20_000, 100_000, 1, 50, 0.2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.interval)
        return 0
    console, say = console_and_say()
    started = time.monotonic()
    say(f"compression benchmark: {args.codec_rows:,} dataset orders in process, {args.rows:,} rows over HTTP")
    codec_results = codecs(args.codec_rows, args.budget, say)
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.compression", "--serve", str(port), "--interval", str(args.interval)]
    with (
        tempfile.TemporaryDirectory(prefix="chute-bench-") as tmp,
        running("compression", command, Path(tmp), port=port),
    ):
        http = export_over_http(port, args.rows, args.repeat, say)
        latencies = {coding: event_latencies(port, coding, args.events) for coding in ("gzip", "br", "zstd")}
    checks = targets(http, latencies)
    console.print(codecs_table(codec_results))
    console.print(http_table(http, args.rows))
    console.print(live_table(latencies))
    return conclude(
        console,
        checks,
        say,
        args,
        started=started,
        environment=common.environment(("chute", "uvicorn", "uvloop", "httptools", "brotli", "zstandard")),
        codecs=[dataclasses.asdict(r) for r in codec_results],
        http=[dataclasses.asdict(r) for r in http],
        latencies_ms={coding: [v * 1000 for v in values] for coding, values in latencies.items()},
    )


if __name__ == "__main__":
    sys.exit(main())
