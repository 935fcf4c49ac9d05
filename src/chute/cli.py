"""The ``chute`` command line: ``chute serve`` runs the reference service."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pydantic
import typer
from rich.console import Console

from chute.__about__ import __version__

if TYPE_CHECKING:
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
    }
    try:
        # Flags win over CHUTE_* variables; validating the merge checks both alike.
        overrides = {name: value for name, value in given.items() if value is not None}
        settings = Settings.model_validate(Settings().model_dump() | overrides)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            console.print(f"[red]error:[/] {'.'.join(map(str, error['loc']))}: {error['msg']}")
        raise typer.Exit(2) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    # Build the dataset before the server starts, with a visible status: the first start takes a few seconds.
    with console.status(f"Preparing the dataset ({settings.rows:,} rows) in {settings.data} ..."):
        path = dataset.ensure(settings.data, settings.rows)
    console.print(f"dataset: [bold]{path}[/]")
    console.print(f"serving on [bold]http://{settings.host}:{settings.port}[/]  (docs at /docs)")
    if settings.server == "granian":
        _serve_granian(settings)
        return
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
    )


def _serve_granian(settings: Settings) -> None:
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
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app()
