"""Proxied downloads over real HTTP: a 1 GiB upstream body fetched directly, through chute's ``ProxyStream`` and
through a hand-written httpx + ``StreamingResponse`` proxy, in the same run.

Run it with ``./scripts/bench-proxy`` (``--help`` for the options). The upstream is chute's ``FileStream`` on
uvicorn with zero-copy sends (the ``chute`` contender of ``benchmarks.file_apps``; nginx is not needed), serving
the file of ``benchmarks.files`` (random bytes, in the page cache). Each proxy (``benchmarks.proxy_apps``) runs in
a process of its own in front of that one upstream, and every download alternates between direct and proxied
ones so all see the same background load. The ratio a target is stated in is proxied / direct, same run.

The client is ``benchmarks.files``' raw socket that discards the body in the kernel (``MSG_TRUNC``): on two
cores the upstream, the proxy and the client share the CPU, and the client must take as little as it can.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import common, file_apps, files
from benchmarks.common import MB, MiB, Say, Server, Target, conclude, console_and_say, free_port

GiB = 1 << 30

SINGLE_RATIO = 0.8
"""One client: chute's proxied throughput at least 0.8x the direct one."""
FLAT_GROWTH = 20 * MB
"""One client: the proxy's peak RSS over its downloads may exceed its idle RSS by this much at most. A relay that
holds one chunk and a bounded read-ahead stays within a few MB whatever the body's size."""
CONCURRENT_GROWTH = 50 * MB
"""Many clients: the same bound for the proxy's peak RSS with every client downloading at once."""

DIRECT = "direct"
CHUTE = "chute"
PROXIES = ("chute", "httpx", "relay")
SERVERS = {
    DIRECT: "FileStream upstream, uvicorn + zero-copy send",
    "chute": "ProxyStream, uvicorn + chute protocol",
    "httpx": "httpx aiter_raw + StreamingResponse, uvicorn",
    "relay": "TCP byte pump, uvloop (no HTTP: the ceiling)",
}


# -- servers


@contextlib.contextmanager
def upstream_server(root: Path, log_dir: Path) -> Iterator[Server]:
    port = free_port()
    launch = file_apps.CONTENDERS["chute"].launch(port, root, log_dir)
    with common.running("upstream", launch.command, log_dir, port=port, env=launch.env) as server:
        yield server


@contextlib.contextmanager
def proxy_server(contender: str, upstream: Server, log_dir: Path) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.proxy_apps",
        contender,
        str(port),
        f"http://{common.HOST}:{upstream.port}",
    ]
    with common.running(contender, command, log_dir, port=port) as server:
        yield server


# -- the scenarios


@dataclasses.dataclass
class Single:
    contender: str
    gbps: list[float]
    headers_ms: float
    server_cpu: float | None
    """Median CPU seconds per GB of the proxy's server (``None`` for direct downloads)."""
    rss_idle: int | None
    rss_peak: int | None

    @property
    def median(self) -> float:
        return statistics.median(self.gbps)


@dataclasses.dataclass
class Concurrent:
    contender: str
    swarm: files.Swarm
    rss_idle: int | None
    rss_peak: int | None


@dataclasses.dataclass
class Results:
    single: list[Single] = dataclasses.field(default_factory=list)
    concurrent: list[Concurrent] = dataclasses.field(default_factory=list)


def single(contenders: Sequence[str], upstream: Server, path: str, runs: int, log_dir: Path, say: Say) -> list[Single]:
    """``runs`` rounds of one download per contender, in turn; each proxy's RSS watched over its downloads."""
    with contextlib.ExitStack() as stack:
        proxies = {name: stack.enter_context(proxy_server(name, upstream, log_dir)) for name in contenders}
        ports = {DIRECT: upstream.port} | {name: server.port for name, server in proxies.items()}
        for port in ports.values():  # imports, the upstream connection, code paths: not in the timed runs
            files.download(port, path, headers={"Range": "bytes=0-1048575"})
        idle = {name: server.idle_rss() for name, server in proxies.items()}
        peaks = {name: stack.enter_context(files.Peak(server)) for name, server in proxies.items()}
        got: dict[str, list[files.Download]] = {name: [] for name in ports}
        cpu: dict[str, list[float]] = {name: [] for name in proxies}
        for run in range(runs):
            for name, port in ports.items():
                cpu0 = files.cpu_seconds(proxies[name]) if name in proxies else 0.0
                result = files.download(port, path)
                got[name].append(result)
                if name in proxies:
                    cpu[name].append((files.cpu_seconds(proxies[name]) - cpu0) / (result.body_bytes / files.GB))
                say(f"  single  run {run + 1}/{runs}  {name:<7} {result.gbps:5.2f} GB/s  ({result.status})")
        for peak in peaks.values():
            peak.__exit__()  # the ExitStack would too, but the values are read below
    return [
        Single(
            name,
            [d.gbps for d in downloads],
            statistics.median(d.headers_time for d in downloads) * 1000,
            statistics.median(cpu[name]) if name in cpu else None,
            idle.get(name),
            peaks[name].value if name in peaks else None,
        )
        for name, downloads in got.items()
    ]


def concurrent(
    contender: str, upstream: Server, path: str, clients: int, duration: float, log_dir: Path, say: Say
) -> Concurrent:
    """``clients`` downloading at once for ``duration`` seconds, directly or through a fresh proxy."""
    if contender == DIRECT:
        result = files.swarm(upstream.port, path, clients, duration)
        say(f"  {clients} clients {contender:<7} {result.gbps:5.2f} GB/s")
        return Concurrent(contender, result, None, None)
    with proxy_server(contender, upstream, log_dir) as server:
        files.download(server.port, path, headers={"Range": "bytes=0-1048575"})
        idle = server.idle_rss()
        with files.Peak(server) as peak:
            result = files.swarm(server.port, path, clients, duration)
    say(f"  {clients} clients {contender:<7} {result.gbps:5.2f} GB/s, peak RSS {peak.value / MB:.0f} MB")
    return Concurrent(contender, result, idle, peak.value)


def run(args: argparse.Namespace, file: Path, say: Say) -> Results:
    results = Results()
    path = f"/{file.name}"
    with tempfile.TemporaryDirectory(prefix="chute-bench-proxy-") as tmp:
        log_dir = Path(tmp)
        with upstream_server(file.parent, log_dir) as upstream:
            results.single = single(args.contenders, upstream, path, args.repeat, log_dir, say)
            if args.clients:
                for name in (DIRECT, *args.contenders):
                    results.concurrent.append(
                        concurrent(name, upstream, path, args.clients, args.duration, log_dir, say)
                    )
    return results


# -- verdicts and output


def _by(rows: Sequence[Any], contender: str) -> Any:
    return next((r for r in rows if r.contender == contender), None)


def targets(results: Results, args: argparse.Namespace) -> list[Target]:
    out: list[Target] = []
    direct: Single | None = _by(results.single, DIRECT)
    chute: Single | None = _by(results.single, CHUTE)
    if direct is None or chute is None or chute.rss_peak is None or chute.rss_idle is None:
        return [Target("1 client: chute / direct throughput", f">= {SINGLE_RATIO:g}x", "not measured", None)]
    ratio = chute.median / direct.median
    out.append(
        Target(
            "1 client: chute proxied / direct throughput",
            f">= {SINGLE_RATIO:g}x",
            f"{ratio:.2f}x ({chute.median:.2f} / {direct.median:.2f} GB/s)",
            ratio >= SINGLE_RATIO,
        )
    )
    growth = chute.rss_peak - chute.rss_idle
    out.append(
        Target(
            f"1 client, {args.repeat} x {args.size_mib} MiB: chute proxy peak RSS - idle",
            f"<= {FLAT_GROWTH / MB:g} MB",
            f"{growth / MB:+.1f} MB ({chute.rss_idle / MB:.0f} -> {chute.rss_peak / MB:.0f} MB)",
            growth <= FLAT_GROWTH,
        )
    )
    many: Concurrent | None = _by(results.concurrent, CHUTE)
    if many is not None and many.rss_peak is not None and many.rss_idle is not None:
        growth = many.rss_peak - many.rss_idle
        complete = many.swarm.truncated == 0 and set(many.swarm.statuses) <= {"200"}
        out.append(
            Target(
                f"{args.clients} clients: chute proxy peak RSS - idle, every answer whole",
                f"<= {CONCURRENT_GROWTH / MB:g} MB",
                f"{growth / MB:+.1f} MB ({many.rss_peak / MB:.0f} MB), truncated {many.swarm.truncated}",
                growth <= CONCURRENT_GROWTH and complete,
            )
        )
    return out


def _mb(value: int | None) -> str:
    return "" if value is None else f"{value / MB:.0f}"


def single_table(results: Results, args: argparse.Namespace) -> Table:
    table = Table(title=f"One client downloads the {args.size_mib / 1024:g} GiB body, {args.repeat} runs each")
    for name in ("contender", "server"):
        table.add_column(name)
    for name in ("GB/s (min-max)", "x direct", "headers ms", "proxy CPU s/GB", "RSS idle MB", "RSS peak MB"):
        table.add_column(name, justify="right")
    direct: Single | None = _by(results.single, DIRECT)
    for r in results.single:
        table.add_row(
            r.contender,
            SERVERS[r.contender],
            f"{r.median:.2f} ({min(r.gbps):.2f}-{max(r.gbps):.2f})",
            f"{r.median / direct.median:.2f}" if direct else "",
            f"{r.headers_ms:.2f}",
            "" if r.server_cpu is None else f"{r.server_cpu:.3f}",
            _mb(r.rss_idle),
            _mb(r.rss_peak),
        )
    return table


def concurrent_table(results: Results, args: argparse.Namespace) -> Table:
    table = Table(title=f"{args.clients} clients download the body at once for {args.duration:g} s")
    table.add_column("contender")
    for name in ("GB/s", "x direct", "complete", "truncated", "statuses", "RSS idle MB", "RSS peak MB"):
        table.add_column(name, justify="right")
    direct: Concurrent | None = _by(results.concurrent, DIRECT)
    for r in results.concurrent:
        table.add_row(
            r.contender,
            f"{r.swarm.gbps:.2f}",
            f"{r.swarm.gbps / direct.swarm.gbps:.2f}" if direct else "",
            str(r.swarm.completed),
            str(r.swarm.truncated),
            " ".join(f"{s}x{n}" for s, n in sorted(r.swarm.statuses.items())),
            _mb(r.rss_idle),
            _mb(r.rss_peak),
        )
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-proxy", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the upstream body in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=5, help="downloads per contender (medians)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (0: skip that scenario)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds the concurrent clients download")
    parser.add_argument(
        "--contenders",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=list(PROXIES),
        help=f"comma-separated proxies, from {', '.join(PROXIES)} (default all; direct is always measured)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where the file is kept (~/.cache/chute-bench)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 MiB, 1 run, 4 clients for 2 s")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat, args.clients, args.duration = 256, 1, 4, 2.0
    unknown = [c for c in args.contenders if c not in PROXIES]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console, say = console_and_say()
    started = time.monotonic()
    size = args.size_mib * MiB
    file = files.ensure_file(args.data_dir or files.data_dir(), size, say)
    rate = files.read_through(file)
    say(
        f"chute proxy benchmark: {file} ({size / GiB:g} GiB, read through at {rate:.1f} GB/s);"
        f" proxies {', '.join(args.contenders)}"
    )
    results = run(args, file, say)
    checks = targets(results, args)
    console.print(single_table(results, args))
    if results.concurrent:
        console.print(concurrent_table(results, args))
    console.print(
        "GB/s: 10^9 bytes of body per second, client-side; MB: 10^6 bytes; RSS: the proxy server's resident memory,"
        " idle after a warm-up request and at its peak (sampled every 10 ms, and the kernel's high-water mark)."
    )
    return conclude(
        console,
        checks,
        say,
        args,
        started=started,
        environment=common.environment(("chute", "httpx", "httpcore", "h11", "uvicorn", "uvloop", "httptools")),
        file={"path": str(file), "bytes": size},
        results=dataclasses.asdict(results),
    )


if __name__ == "__main__":
    sys.exit(main())
