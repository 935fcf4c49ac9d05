"""PostgreSQL exports through chute against ``psql``'s own ``\\copy``, in the same run.

The orders table is loaded once into the database ``chute_bench`` (10M rows by default; a later run with the same
row count reuses it and says so). Then, each ``--repeat`` times, in turn:

- ``psql -c "\\copy (SELECT ... ORDER BY id) to stdout with (format csv, header)" > /dev/null``: wall time;
- chute's CSV export over HTTP (``chute serve --database ...``, one uvicorn worker, ``COPY`` streamed through
  :class:`~chute.responses.bytestream.ByteStream`), read by the fast client of ``benchmarks/records.py``;
- chute's NDJSON export (server-side cursor, row Structs, the batch encoder), read the same way.

Targets (medians, same run): chute's CSV throughput >= 0.8x psql's; NDJSON >= 500,000 rows/s. The server's peak
RSS while streaming is reported. ``--conversions`` also times the ways to turn asyncpg Records into row Structs.

    ./scripts/bench-postgres            # 10M rows, 3 runs of each
    ./scripts/bench-postgres --quick    # 200k rows in chute_bench_quick, one run each
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from rich.table import Table

from benchmarks.common import (
    MiB,
    RssSampler,
    Say,
    Target,
    conclude,
    console_and_say,
    environment,
    free_port,
    running,
)
from benchmarks.records import fetch
from chute.service import pg_dataset
from chute.sources.sql import quote_identifier, row_type

SERVER = "postgresql://postgres@127.0.0.1:5432"
COPY_RATIO = 0.8
NDJSON_ROWS_PER_S = 500_000


@dataclasses.dataclass
class Run:
    case: str
    walls: list[float]
    body_bytes: int
    peak_rss: int = 0
    idle_rss: int = 0

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def ensure_database(name: str, rows: int, say: Say) -> str:
    """The URL of database ``name`` holding ``rows`` orders, loading them only when it holds something else."""

    async def prepare() -> bool:
        admin = await asyncpg.connect(f"{SERVER}/postgres")
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await admin.execute(f"CREATE DATABASE {quote_identifier(name)}")
        finally:
            await admin.close()
        return await pg_dataset.load(f"{SERVER}/{name}", rows)

    started = time.perf_counter()
    if asyncio.run(prepare()):
        say(f"loaded {rows:,} orders into {name} in {time.perf_counter() - started:.1f} s")
    else:
        say(f"reusing {name}: it already holds {rows:,} orders")
    return f"{SERVER}/{name}"


def psql_copy(url: str, columns: Sequence[str]) -> float:
    """Wall time of psql's ``\\copy`` of the same query chute runs, written to /dev/null."""
    query = f"SELECT {', '.join(map(quote_identifier, columns))} FROM orders ORDER BY id"
    command = ["psql", url, "-X", "-q", "-c", f"\\copy ({query}) to stdout with (format csv, header)"]
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def conversions(url: str, say: Say) -> dict[str, float]:
    """Records per second of each way to turn asyncpg Records into row Structs (100k rows, in process)."""

    async def measure() -> dict[str, float]:
        connection = await asyncpg.connect(url)
        try:
            records = await connection.fetch("SELECT * FROM orders ORDER BY id LIMIT 100000")
        finally:
            await connection.close()
        make = row_type(tuple(records[0].keys()))
        assert make is not None
        ways: dict[str, Callable[[list[Any]], list[Any]]] = {
            "starmap(Row, records)": lambda r: list(itertools.starmap(make, r)),
            "[Row(*r) for r in records]": lambda r: [make(*x) for x in r],
            "[Row(**r) for r in records]": lambda r: [make(**x) for x in r],
            "tuples (no Struct)": lambda r: list(map(tuple, r)),
        }
        rates = {}
        for name, way in ways.items():
            best = min(_timed(way, records) for _ in range(5))
            rates[name] = len(records) / best
            say(f"  {name:30s} {rates[name] / 1e6:6.2f}M rows/s")
        return rates

    return asyncio.run(measure())


def _timed(way: Callable[[list[Any]], list[Any]], records: list[Any]) -> float:
    started = time.perf_counter()
    way(records)
    return time.perf_counter() - started


def run(args: argparse.Namespace, say: Say) -> tuple[list[Run], dict[str, float]]:
    url = ensure_database(args.database, args.rows, say)
    columns = pg_dataset.ORDER_COLUMNS
    rates = conversions(url, say) if args.conversions else {}
    psql = Run("psql \\copy (CSV)", [], 0)
    csv = Run("chute CSV (COPY)", [], 0)
    ndjson = Run("chute NDJSON (cursor)", [], 0)
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        command = [sys.executable, "-m", "chute", "serve", "--port", str(port), "--database", url]
        command += ["--data", folder, "--files", folder, "--log-level", "warning"]
        with running("chute", command, Path(folder), port=port) as server:
            # A warm-up export (plans cached, pages in memory), as psql's first run warms the same pages.
            fetch(port, "/exports/orders?format=csv&limit=100000")
            for case in (psql, csv, ndjson):
                case.idle_rss = server.idle_rss()
            for i in range(args.repeat):
                psql.walls.append(psql_copy(url, columns))
                for case, path, lines in (
                    (csv, "/exports/orders?format=csv", args.rows + 1),
                    (ndjson, "/exports/orders?format=ndjson", args.rows),
                ):
                    server.reset_peak()
                    with RssSampler(server) as sampler:
                        got = fetch(port, path)
                    if got.lines != lines:
                        raise RuntimeError(f"{case.case}: {got.lines} lines, expected {lines}")
                    case.walls.append(got.wall)
                    case.body_bytes = got.body_bytes
                    case.peak_rss = max(case.peak_rss, sampler.peak, server.kernel_peak() or 0)
                say(
                    f"run {i + 1}: psql {psql.walls[-1]:.2f} s, chute CSV {csv.walls[-1]:.2f} s, "
                    f"NDJSON {ndjson.walls[-1]:.2f} s"
                )
    return [psql, csv, ndjson], rates


def results_table(results: Sequence[Run], rows: int) -> Table:
    table = Table(title=f"PostgreSQL exports, {rows:,} orders")
    for name in ("case", "time s (min-max)", "MB", "MB/s", "rows/s", "peak RSS MiB (idle)"):
        table.add_column(name, justify="left" if name == "case" else "right")
    for r in results:
        table.add_row(
            r.case,
            f"{r.wall:.3f} ({min(r.walls):.2f}-{max(r.walls):.2f})",
            f"{r.body_bytes / 1e6:.0f}" if r.body_bytes else "-",  # psql's bytes are chute CSV's: same COPY
            f"{r.body_bytes / 1e6 / r.wall:.0f}" if r.body_bytes else "-",
            f"{rows / r.wall / 1e6:.2f}M",
            "" if not r.peak_rss else f"{r.peak_rss / MiB:.1f} ({r.idle_rss / MiB:.1f})",
        )
    return table


def targets(results: Sequence[Run], rows: int) -> list[Target]:
    psql, csv, ndjson = results
    ratio = psql.wall / csv.wall
    rate = rows / ndjson.wall
    return [
        Target("CSV: chute throughput / psql \\copy", f">= {COPY_RATIO}x", f"{ratio:.2f}x", ratio >= COPY_RATIO),
        Target("NDJSON rows/s, one worker", f">= {NDJSON_ROWS_PER_S:,}", f"{rate:,.0f}", rate >= NDJSON_ROWS_PER_S),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", default="chute_bench", help="database name on 127.0.0.1:5432 (kept)")
    parser.add_argument("--quick", action="store_true", help="200k rows in chute_bench_quick, one run")
    parser.add_argument("--conversions", action="store_true", help="also time Record -> Struct conversions")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeat, args.database = 200_000, 1, "chute_bench_quick"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console, say = console_and_say()
    info = environment(["asyncpg", "uvicorn", "msgspec"])
    say(f"{args.rows:,} rows, {args.repeat} run(s); python {info['python']}, {info['cpus']} cores")
    results, rates = run(args, say)
    console.print(results_table(results, args.rows))
    checks = targets(results, args.rows)
    return conclude(
        console,
        checks,
        say,
        args,
        environment=info,
        results=[dataclasses.asdict(r) | {"wall": r.wall} for r in results],
        conversions=rates,
    )


if __name__ == "__main__":
    sys.exit(main())
