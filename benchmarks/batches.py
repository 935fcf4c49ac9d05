"""``/stream-batches`` under CPU-heavy batches: the brief's synchronous generator against chute's process pool.

Each contender runs in its own server process on loopback. One client reads ``num_batches`` batches of
``batch_size`` results; meanwhile a prober asks ``/healthz`` every 20 ms on its own keep-alive connection. Reported:
wall time of the whole response, time to the first byte, and the prober's latencies. Targets (same run): chute's
wall time <= 0.6x the seed's, and every ``/healthz`` answered within 50 ms while chute computes.

    ./scripts/bench-batches            # 8 batches of 100,000 results (the service's maximum batch)
    ./scripts/bench-batches --quick    # 8 batches of 25,000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from benchmarks.common import HOST, MB, Say, Target, conclude, console_and_say, environment, free_port, running

PROBE_INTERVAL = 0.02
HEALTH_GOAL_MS = 50.0
WALL_GOAL = 0.6


@dataclasses.dataclass
class Result:
    contender: str
    wall: float
    first_byte: float
    size: int
    batches: int
    health_ms: list[float]

    @property
    def health_max(self) -> float:
        return max(self.health_ms, default=float("nan"))

    @property
    def health_p99(self) -> float:
        if len(self.health_ms) < 2:
            return self.health_max
        return statistics.quantiles(self.health_ms, n=100, method="inclusive")[98]  # never beyond the max


class Prober:
    """Asks ``/healthz`` every ``PROBE_INTERVAL`` seconds until stopped; the latency of each answer, in ms."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=30) as client:
            client.get("/healthz")  # the connection is open before the measurement starts
            while not self._stop.is_set():
                started = time.perf_counter()
                response = client.get("/healthz")
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"/healthz answered {response.status_code}")
                self.latencies.append(elapsed)
                self._stop.wait(PROBE_INTERVAL)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(contender: str, port: int, num_batches: int, batch_size: int) -> Result:
    url = f"http://{HOST}:{port}/stream-batches?num_batches={num_batches}&batch_size={batch_size}"
    size = 0
    first_byte = 0.0
    with Prober(port) as prober:
        time.sleep(0.1)
        started = time.perf_counter()
        with httpx.stream("GET", url, timeout=600) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                if not size:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
        wall = time.perf_counter() - started
    body_batches = num_batches if size else 0
    return Result(contender, wall, first_byte, size, body_batches, prober.latencies)


def command(contender: str, port: int, data: Path, workers: int) -> list[str]:
    if contender == "seed":
        return [sys.executable, "-m", "benchmarks.batch_apps", str(port)]
    return [
        sys.executable,
        "-m",
        "chute",
        "serve",
        "--port",
        str(port),
        "--data",
        str(data),
        "--rows",
        "1000",
        "--log-level",
        "warning",
    ]


def run(args: argparse.Namespace, say: Say) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="chute-bench-batches-") as folder:
        log_dir = Path(folder)
        for contender in ("seed", "chute"):
            port = free_port()
            env = {"CHUTE_BATCH_WORKERS": str(args.workers)}
            with running(
                contender, command(contender, port, log_dir / "data", args.workers), log_dir, port=port, env=env
            ):
                if contender == "chute":  # the pool starts its workers on first use: not part of the measurement
                    measure(contender, port, 2, 1000)
                runs = [measure(contender, port, args.batches, args.batch_size) for _ in range(args.repeat)]
                best = min(runs, key=lambda r: r.wall)
                best.health_ms = [ms for r in runs for ms in r.health_ms]  # every probe of every run counts
                results.append(best)
                say(f"{contender}: {best.wall:.2f} s, /healthz max {best.health_max:.1f} ms")
    return results


def results_table(results: Sequence[Result]) -> Table:
    table = Table(title="/stream-batches: CPU-heavy batches, one client, /healthz probed every 20 ms")
    for column in ("contender", "wall s", "first byte s", "MB", "healthz probes", "healthz p99 ms", "healthz max ms"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for r in results:
        table.add_row(
            r.contender,
            f"{r.wall:.2f}",
            f"{r.first_byte:.2f}",
            f"{r.size / MB:.1f}",
            str(len(r.health_ms)),
            f"{r.health_p99:.1f}",
            f"{r.health_max:.1f}",
        )
    return table


def targets(results: Sequence[Result]) -> list[Target]:
    by_name = {r.contender: r for r in results}
    seed, chute = by_name.get("seed"), by_name.get("chute")
    checks = []
    if seed and chute:
        ratio = chute.wall / seed.wall
        checks.append(Target("wall time, chute / seed", f"<= {WALL_GOAL}x", f"{ratio:.2f}x", ratio <= WALL_GOAL))
    if chute:
        checks.append(
            Target(
                "/healthz while chute computes (max)",
                f"<= {HEALTH_GOAL_MS:.0f} ms",
                f"{chute.health_max:.1f} ms",
                chute.health_max <= HEALTH_GOAL_MS,
            )
        )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller batches: a smoke run")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="results per batch (default 100,000, the service's maximum)"
    )
    parser.add_argument("--workers", type=int, default=2, help="chute's pool processes (CHUTE_BATCH_WORKERS)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the fastest is reported")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 25_000 if args.quick else 100_000
    if args.quick:
        args.repeat = 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console, say = console_and_say()
    info: dict[str, Any] = environment(["fastapi", "uvicorn", "msgspec"])
    say(f"{args.batches} batches of {args.batch_size:,} results; python {info['python']}, {info['cpus']} cores")
    results = run(args, say)
    console.print(results_table(results))
    checks = targets(results)
    return conclude(
        console,
        checks,
        say,
        args,
        strict=True,  # this run has no --strict: a failed target is always exit status 1
        environment=info,
        results=[dataclasses.asdict(r) | {"health_max": r.health_max} for r in results],
    )


if __name__ == "__main__":
    sys.exit(main())
