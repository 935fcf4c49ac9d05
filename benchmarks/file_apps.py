"""The file-download contenders: what each server runs and the command that starts it.

Every contender serves the files of one folder at ``GET /{name}`` and answers ``GET /healthz``, on
``127.0.0.1:PORT``, from a process of its own:

- ``nginx``, ``nginx-auto``: nginx with ``sendfile``, one worker or one per core, from a minimal config;
- ``starlette``: Starlette's ``FileResponse`` in a FastAPI app on uvicorn (uvloop, httptools, one worker);
- ``chute``: chute's ``FileStream`` in a FastAPI app on uvicorn, likewise;
- ``chute-granian``: the same app on granian (one worker, uvloop), which offers ``http.response.pathsend``;
- ``starlette-granian`` (not run by default): ``FileResponse`` on granian, which also uses pathsend.

The uvicorn apps run as ``python -m benchmarks.file_apps CONTENDER PORT ROOT``; granian imports
:func:`app_from_env` in its worker, with the folder in ``CHUTE_BENCH_ROOT``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response

from benchmarks.apps import bare_app, run_uvicorn
from chute import FileStream, protocol

ROOT_ENV = "CHUTE_BENCH_ROOT"
APP_ENV = "CHUTE_BENCH_APP"


# -- the ASGI apps


def starlette_app(root: Path) -> FastAPI:
    """Starlette's ``FileResponse``: 64 KiB reads through anyio's thread-backed file, or pathsend if offered."""
    app = bare_app()

    @app.get("/{name}")
    async def download(name: str) -> Response:
        # The path parameter cannot hold a "/", so joining it stays inside ``root`` (".." is not routed here).
        return FileResponse(root / name)

    return app


def chute_app(root: Path) -> FastAPI:
    """chute's ``FileStream`` with its defaults (1 MiB reads at most, attachment, 60 s send deadline)."""
    app = bare_app()

    @app.get("/{name}")
    async def download(name: str) -> Response:
        return FileStream(name, root=root)

    return app


APPS: dict[str, Callable[[Path], FastAPI]] = {"starlette": starlette_app, "chute": chute_app}


def app_from_env() -> FastAPI:
    """The app granian builds in its worker process (``--factory``): which one and its folder come by environment."""
    return APPS[os.environ[APP_ENV]](Path(os.environ[ROOT_ENV]))


# -- how each contender starts


@dataclasses.dataclass(frozen=True)
class Launch:
    command: list[str]
    env: Mapping[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    server: str
    """The HTTP server, as shown in the tables."""
    launch: Callable[[int, Path, Path], Launch]
    """``(port, root, scratch)`` to the command; ``scratch`` is an empty folder for config, pid and logs."""
    python: bool = True


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
# Root may serve files from a folder only root can read (a cache under /root); elsewhere this is ignored.
user root;
pid {scratch}/nginx.pid;
error_log {scratch}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    # The 5,000-range request has a 49 KB Range header: with the default 8 KiB buffers nginx would answer 400
    # before it looked at the ranges.
    large_client_header_buffers 4 64k;
    client_body_temp_path {scratch}/client_body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location = /healthz {{
            return 200 "ok";
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _nginx(workers: str) -> Callable[[int, Path, Path], Launch]:
    def launch(port: int, root: Path, scratch: Path) -> Launch:
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (scripts/bench-files installs it)")
        conf = scratch / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, scratch=scratch, host="127.0.0.1", port=port, root=root))
        # -e: the error log before the config is read, which would otherwise be the system's /var/log/nginx.
        return Launch([binary, "-p", str(scratch), "-c", str(conf), "-e", str(scratch / "error.log")])

    return launch


def _uvicorn(app: str) -> Callable[[int, Path, Path], Launch]:
    def launch(port: int, root: Path, scratch: Path) -> Launch:
        return Launch([sys.executable, "-m", "benchmarks.file_apps", app, str(port), str(root)])

    return launch


def _granian(app: str) -> Callable[[int, Path, Path], Launch]:
    def launch(port: int, root: Path, scratch: Path) -> Launch:
        command = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-ws",
            "--factory",
            "benchmarks.file_apps:app_from_env",
        ]
        return Launch(command, env={APP_ENV: app, ROOT_ENV: str(root)})

    return launch


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("nginx", "nginx sendfile, 1 worker", _nginx("1"), python=False),
        Contender("nginx-auto", "nginx sendfile, workers auto", _nginx("auto"), python=False),
        Contender("starlette", "FileResponse, uvicorn", _uvicorn("starlette")),
        Contender("chute", "FileStream, uvicorn + zero-copy send", _uvicorn("chute")),
        Contender("chute-granian", "FileStream, granian", _granian("chute")),
        Contender("starlette-granian", "FileResponse, granian", _granian("starlette")),
    )
}
DEFAULT = ("nginx", "nginx-auto", "starlette", "chute", "chute-granian")


def granian_available() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


def serve(app: str, port: int, root: Path) -> None:
    # chute runs on uvicorn as `chute serve` runs it: with its protocol that offers zero-copy sends.
    run_uvicorn(APPS[app](root), port, http=protocol.HttpToolsProtocol if app == "chute" else "httptools")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 3 or argv[0] not in APPS:
        sys.exit(f"usage: python -m benchmarks.file_apps {{{','.join(APPS)}}} PORT ROOT")
    serve(argv[0], int(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
