"""What the benchmark runners share: server processes and their memory, target verdicts, console and environment."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MB = 1_000_000
MiB = 1 << 20
RSS_INTERVAL = 0.01

Say = Callable[[str], None]
S = TypeVar("S", bound="Server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One contender in its own process (and its children: nginx and granian serve from worker processes).

    ``command`` must make the server listen on ``HOST:port`` and answer ``GET /healthz`` with a 200.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_dir: Path,
        *,
        port: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.contender = name
        self.port = port
        self.log_path = log_dir / f"{name}-{port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(command),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
            )
        self.ps = psutil.Process(self.process.pid)
        self.members: list[psutil.Process] = [self.ps]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.contender} server exited: {self.log_path.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    # Workers exist once the server answers. They are listed once, here, rather than at every
                    # sample: walking /proc for children every 10 ms would cost the server the CPU it is measured on.
                    self.members = [self.ps, *self.ps.children(recursive=True)]
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.contender} server did not start")

    def rss(self) -> int:
        """Resident memory of the server and its workers, summed."""
        return rss_of(self.members)

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server and its workers so far."""
        return cpu_seconds(self.members)

    def idle_rss(self) -> int:
        """Resident memory at rest: the median of a few samples, once the last response has settled."""
        time.sleep(0.2)
        samples = []
        for _ in range(5):
            samples.append(self.rss())
            time.sleep(RSS_INTERVAL)
        return int(statistics.median(samples))

    def reset_peak(self) -> bool:
        """Reset the kernel's high-water mark of each member's RSS (``VmHWM``), where Linux allows it."""
        try:
            for member in self.members:
                Path(f"/proc/{member.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def kernel_peak(self) -> int | None:
        """The sum of the members' ``VmHWM``: exact for one process, an upper bound for several (their peaks
        need not coincide), and it catches spikes between two samples."""
        total = 0
        for member in self.members:
            try:
                status = Path(f"/proc/{member.pid}/status").read_text()
            except OSError:
                return None
            hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
            if hwm is None:
                return None
            total += int(hwm.split()[1]) * 1024
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for member in self.members[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()


@contextlib.contextmanager
def running(
    name: str, command: Sequence[str], log_dir: Path, *, port: int, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    server = started(Server(name, command, log_dir, port=port, env=env))
    try:
        yield server
    finally:
        server.stop()


def started(server: S) -> S:
    """``server`` once it answers; stopped (and the error raised) when it does not."""
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def rss_of(processes: Iterable[psutil.Process]) -> int:
    """Resident memory of ``processes``, summed; those that exited count nothing."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User and system CPU time of ``processes`` so far, summed."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class RssSampler:
    """Samples the server's RSS every ``interval`` in a thread; ``peak`` is the largest seen, ``samples`` all."""

    def __init__(self, server: Server, interval: float = RSS_INTERVAL) -> None:
        self.server = server
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                rss = self.server.rss()
                self.peak = max(self.peak, rss)
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- verdicts and tables


def by_contender(rows: Iterable[Any], contender: str) -> Any:
    """The first row of ``contender`` (rows have a ``contender`` attribute), or ``None``."""
    return next((row for row in rows if row.contender == contender), None)


def table(title: str, text: Sequence[str], numbers: Sequence[str]) -> Table:
    """A result table: ``text`` columns left-aligned, then ``numbers`` columns right-aligned."""
    out = Table(title=title)
    for name in text:
        out.add_column(name)
    for name in numbers:
        out.add_column(name, justify="right")
    return out


@dataclasses.dataclass
class Target:
    name: str
    goal: str
    value: str
    passed: bool | None
    """``None`` when the run did not measure what the target needs."""


def targets_table(checks: Sequence[Target]) -> Table:
    table = Table(title="Targets")
    table.add_column("target")
    table.add_column("goal", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for check in checks:
        verdict = "[green]PASS[/]" if check.passed else "[yellow]n/a[/]" if check.passed is None else "[red]FAIL[/]"
        table.add_row(check.name, check.goal, check.value, verdict)
    return table


# -- output and environment


def console_and_say() -> tuple[Console, Say]:
    console = Console()
    if not console.is_terminal:
        # Piped or captured output: rich would wrap the wide table to 80 columns and clip every cell.
        console = Console(width=220)
    say: Say = console.print if console.is_terminal else lambda text: print(text, flush=True)
    return console, say


def environment(packages: Sequence[str], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    versions = {}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        **(extra or {}),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_results(path: Path, args: Any, checks: Sequence[Target], say: Say, **sections: Any) -> None:
    """Every number of a run as JSON: the arguments, ``sections`` (environment, results, ...) and the targets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **sections,
        "targets": [dataclasses.asdict(t) for t in checks],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    say(f"results written to {path}")


def conclude(
    console: Console,
    checks: Sequence[Target],
    say: Say,
    args: Any,
    *,
    started: float | None = None,
    strict: bool | None = None,
    **sections: Any,
) -> int:
    """The end of every run: the targets table, the total time, every number as JSON when ``--json`` asked for
    it (``sections`` beside the arguments and targets), and the exit status: 1 when a target failed and the run
    is ``strict`` (by default ``--strict``)."""
    console.print(targets_table(checks))
    if started is not None:
        say(f"total {time.monotonic() - started:.0f} s")
    if args.json is not None:
        write_results(args.json, args, checks, say, **sections)
    failed = any(check.passed is False for check in checks)
    return 1 if (args.strict if strict is None else strict) and failed else 0
