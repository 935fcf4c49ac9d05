"""The ``chute`` command line: ``chute serve`` runs the reference service, ``chute get`` downloads resumably."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
import typer
from rich.console import Console

from chute.__about__ import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from rich.progress import TaskID

    from chute.service.settings import Settings

app = typer.Typer(help="chute: large HTTP responses, done right.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [env CHUTE_HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env CHUTE_PORT, default 8000].")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder of the embedded dataset, created on first start [env CHUTE_DATA].")
    ] = None,
    files: Annotated[
        Path | None,
        typer.Option(help="Folder served by /download-file [env CHUTE_FILES, default <data>/files with samples]."),
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help="Rows of the generated orders table [env CHUTE_ROWS, default 1000000].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    server: Annotated[str | None, typer.Option(help="uvicorn or granian [env CHUTE_SERVER, default uvicorn].")] = None,
    broker: Annotated[
        str | None,
        typer.Option(help="Event log: memory, or redis://host:port/db to share it [env CHUTE_BROKER, default memory]."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes; >1 needs a redis:// broker [env CHUTE_WORKERS, default 1].")
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="postgresql://user@host:port/db to export from instead of the embedded SQLite dataset "
            "(fill it with `chute load-data`) [env CHUTE_DATABASE]."
        ),
    ] = None,
) -> None:
    """Run the reference service (FastAPI on uvicorn with uvloop and httptools)."""
    import uvicorn

    from chute.service import dataset
    from chute.service.app import create_app
    from chute.service.settings import Settings

    given = {
        "host": host,
        "port": port,
        "data": data,
        "files": files,
        "rows": rows,
        "log_level": log_level,
        "server": server,
        "broker": broker,
        "workers": workers,
        "database": database,
    }
    try:
        # Flags win over CHUTE_* variables; validating the merge checks both alike.
        overrides = {name: value for name, value in given.items() if value is not None}
        settings = Settings.model_validate(Settings().model_dump() | overrides)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            console.print(f"[red]error:[/] {'.'.join(map(str, error['loc']))}: {error['msg']}")
        raise typer.Exit(2) from None
    if settings.database is not None:
        console.print(f"exports from: [bold]{_without_password(settings.database)}[/]")
    else:
        # Build the dataset before the server starts, with a visible status: the first start takes a few seconds.
        with console.status(f"Preparing the dataset ({settings.rows:,} rows) in {settings.data} ..."):
            path = dataset.ensure(settings.data, settings.rows)
        console.print(f"dataset: [bold]{path}[/]")
    console.print(f"serving on [bold]http://{settings.host}:{settings.port}[/]  (docs at /docs)")
    if settings.server == "granian":
        _serve_granian(settings)
        return
    from chute.protocol import HttpToolsProtocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": HttpToolsProtocol,  # httptools, plus zero-copy file sends, resets and feed shutdown
        "log_level": settings.log_level,
        "log_config": _log_config(settings.log_level),
        "access_log": False,  # chute.access logs each request when it ends, with its bytes and duration
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "backlog": 4096,  # clients of live feeds reconnect all at once after a restart
    }
    if settings.workers > 1:
        # Each worker process builds its app from the settings, read back from the environment.
        os.environ.update(settings.environment())
        from chute.metrics import multiprocess_folder

        with multiprocess_folder():  # every worker writes its metrics there, and any worker's /metrics adds them up
            uvicorn.run("chute.cli:worker_app", factory=True, workers=settings.workers, **options)
    else:
        service = create_app(settings)
        tune_gc()
        uvicorn.run(service, **options)


@app.command("load-data")
def load_data(
    database: Annotated[
        str | None,
        typer.Option(help="postgresql://user@host:port/db to load; without it, the embedded SQLite dataset."),
    ] = None,
    rows: Annotated[int, typer.Option(min=0, max=100_000_000, help="Rows of the orders table.")] = 1_000_000,
    data: Annotated[Path, typer.Option(help="Folder of the embedded dataset (without --database).")] = Path("data"),
) -> None:
    """Load the sample dataset (customers and orders, deterministic) into PostgreSQL or the embedded SQLite."""
    if database is None:
        from chute.service import dataset

        with console.status(f"Preparing the dataset ({rows:,} rows) in {data} ..."):
            path = dataset.ensure(data, rows)
        console.print(f"dataset: [bold]{path}[/]")
        return
    import anyio
    import asyncpg

    from chute.service import pg_dataset

    target = _without_password(database)
    try:
        with console.status(f"Loading {rows:,} rows into {target} ..."):
            loaded = anyio.run(pg_dataset.load, database, rows)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        console.print(f"[red]error:[/] {target}: {exc}")
        raise typer.Exit(1) from None
    console.print(f"{target}: {'loaded' if loaded else 'already holds'} {rows:,} orders")


def _without_password(url: str) -> str:
    """``url`` fit to print: any password replaced by ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections 70 times rarer than CPython's default (700, 10, 10), full ones rarer still.

A server with ten thousand open feeds holds millions of long-lived objects, and fanning one event out allocates
tens of thousands of short-lived ones: at the default thresholds the young collections run hundreds of times per
event and the full ones, which walk every feed, land in the middle of fan-outs (measured: ``benchmarks/README.md``,
live feeds). Almost everything a request allocates is freed by reference counting anyway."""


def tune_gc() -> None:
    """Move what startup built (modules, the app) out of the collector's sight, and collect less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def worker_app() -> Any:
    """The service app of one worker process (``--workers`` > 1), with the collector tuned as in one process."""
    from chute.service.app import create_app

    service = create_app()
    tune_gc()
    return service


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup, plus the root logger (chute's own records) in the same format, in every worker."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    config["loggers"]["uvicorn"]["propagate"] = False
    return config


def _serve_granian(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    # granian builds the app in its worker process, which reads the settings back from the environment.
    os.environ.update(settings.environment())
    Granian(
        "chute.service.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        log_level=LogLevels(settings.log_level),
    ).serve()


@app.command()
def get(
    url: Annotated[str, typer.Argument(help="The URL to download.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write, or a folder to write into [default: the name the server suggests, else the "
            "URL's last segment, in the current folder].",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary; errors only.")] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace the file if it exists.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait to connect, or for the next bytes.")] = 30.0,
) -> None:
    """Download URL, resumably: after any interruption, the same command continues where it stopped."""
    import httpx
    from rich.markup import escape

    from chute.client import download
    from chute.exceptions import ClientError

    def fail(message: str) -> typer.Exit:
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
        return typer.Exit(1)

    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client:
        path, resumable_export = _output_path(client, url, output)
        if path.exists() and not force:
            raise fail(f"{path} exists; --force replaces it")
        if resumable_export:
            _get_export(client, url, path, quiet, fail)
            return
        bar = _ProgressBar(path.name, quiet)
        try:
            with bar:
                result = download(url, path, client=client, progress=bar)
        except ClientError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"{path}: {exc.strerror or exc}") from None
        except KeyboardInterrupt:
            console.print(f"interrupted: {path}.part kept; the same command resumes the download", soft_wrap=True)
            raise typer.Exit(130) from None
    if not quiet:
        notes = [f"{result.size:,} bytes"]
        if result.resumed_from:
            notes.append(f"resumed at {result.resumed_from:,}")
        if result.restart_reason:
            notes.append(f"started over: {result.restart_reason}")
        if result.digest_verified and result.digest:
            notes.append(f"{result.digest.partition('=')[0]} verified")
        console.print(f"saved [bold]{escape(str(path))}[/] ({escape(', '.join(notes))})", soft_wrap=True)


def _output_path(client: httpx.Client, url: str, output: Path | None) -> tuple[Path, bool]:
    """``output``, or the server's suggested name (a plain name, never a path) in ``output`` or the current
    folder, and whether the URL is an NDJSON export the server can resume (``Chute-Resume: after``). A HEAD
    request asks; without an answer the URL gives the name."""
    import httpx

    from chute.client import filename_from
    from chute.client.exports import NDJSON_TYPES

    disposition, where, resumable = None, url, False
    try:
        head = client.head(url, headers={"accept-encoding": "identity"})
    except (httpx.HTTPError, httpx.InvalidURL):
        pass  # the download itself will report what is wrong
    else:
        where = str(head.url)
        if head.is_success:
            disposition = head.headers.get("content-disposition")
            media_type = head.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            resumable = head.headers.get("chute-resume") == "after" and media_type in NDJSON_TYPES
    if output is not None and not output.is_dir():
        return output, resumable
    return (output or Path()) / filename_from(disposition, where), resumable


def _get_export(client: httpx.Client, url: str, path: Path, quiet: bool, fail: Callable[[str], typer.Exit]) -> None:
    """``chute get`` of a resumable export: records, continued after every break with the server's token."""
    from rich.markup import escape

    from chute.client import export
    from chute.exceptions import ClientError

    status = console.status(f"{escape(path.name)}: 0 records")

    def progress(records: int) -> None:
        status.update(f"{escape(path.name)}: {records:,} records")

    try:
        with status if not quiet else contextlib.nullcontext():
            result = export(url, path, client=client, progress=None if quiet else progress)
    except ClientError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        console.print("interrupted: the export starts over on the next run", soft_wrap=True)
        raise typer.Exit(130) from None
    if not quiet:
        resumed = f", resumed {result.resumed} times" if result.resumed else ""
        console.print(f"saved [bold]{escape(str(path))}[/] ({result.records:,} records{resumed})", soft_wrap=True)


class _ProgressBar:
    """The ``progress`` callback of a download as a rich progress bar (bytes, speed, time left)."""

    def __init__(self, name: str, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.name = name
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self.quiet = quiet
        self.task: TaskID | None = None
        self.done = 0

    def __enter__(self) -> _ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int | None) -> None:
        if self.task is None:
            if done and not self.quiet:
                self.progress.console.print(f"resuming at {done:,} bytes", soft_wrap=True)
            self.task = self.progress.add_task(self.name, total=total, completed=done)
        elif done < self.done:  # started over
            self.progress.reset(self.task, total=total, completed=done)
        else:
            self.progress.update(self.task, total=total, completed=done)
        self.done = done


@app.command()
def tail(
    url: Annotated[str, typer.Argument(help="The URL of a Server-Sent Events feed.")],
    last_event_id: Annotated[
        str | None, typer.Option("--last-event-id", help="Start after this event (sent as Last-Event-ID).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='One JSON object per line: {"event": ..., "id": ..., "data": ...}.')
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds without a byte (event or heartbeat) before reconnecting.")
    ] = 60.0,
) -> None:
    """Print the events of the feed at URL as they arrive, reconnecting (with Last-Event-ID) when the connection
    drops; stop when the server answers 204 No Content."""
    import json
    import re
    from contextlib import aclosing

    import anyio
    from rich.markup import escape
    from rich.text import Text

    from chute.client import ReceivedEvent, events
    from chute.exceptions import ClientError

    out = Console(highlight=False, soft_wrap=True)
    # What a server sends reaches a terminal: its control characters (escape sequences) are shown, not obeyed.
    controls = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

    def visible(text: str) -> str:
        return controls.sub(lambda found: f"\\x{ord(found[0]):02x}", text)

    def show(event: ReceivedEvent) -> None:
        if as_json:
            line = json.dumps(
                {"event": event.event or "message", "id": event.id, "data": event.data}, ensure_ascii=False
            )
            print(re.sub(r"[\x7f-\x9f]", lambda found: f"\\u{ord(found[0]):04x}", line), flush=True)
            return
        header = Text(visible(event.event or "message"), style="bold cyan")
        if event.id is not None:
            header.append(f"  id {visible(event.id)}", style="dim")
        out.print(header)
        out.print(Text("\n".join(f"  {visible(line)}" for line in event.data.split("\n"))))

    def reconnecting(why: str, delay: float) -> None:
        console.print(f"[yellow]reconnecting in {delay:.1f} s:[/] {escape(visible(why))}", soft_wrap=True)

    async def follow() -> None:
        feed = events(url, last_event_id=last_event_id, read_timeout=timeout, on_reconnect=reconnecting)
        async with aclosing(feed):
            async for event in feed:
                show(event)

    try:
        anyio.run(follow)
    except ClientError as exc:
        console.print(f"[red]error:[/] {escape(visible(str(exc)))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted", soft_wrap=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader left (`chute tail URL | head`): a normal end. Stdout goes nowhere, so the interpreter's
        # final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        raise typer.Exit(0) from None
    console.print("the server ended the feed (204 No Content)", soft_wrap=True)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app()
