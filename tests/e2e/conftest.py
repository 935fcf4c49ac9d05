"""The reference service as a subprocess, for end-to-end tests (``serve_app`` is in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

SERVICE_ROWS = 5000
PUBLISH_TOKEN = "test-publish-token"


def wait_until_healthy(base_url: str, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} did not become healthy")


class Service:
    """A running ``chute serve`` process; ``log()`` returns what it has printed so far."""

    def __init__(self, base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.base_url = base_url
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_service(data: Path, *extra: str, port: int | None = None) -> Iterator[Service]:
    """``chute serve`` on ``port`` (default: a free one) over ``data``, with ``extra`` flags; stopped on exit."""
    log_path = data / "server.log"
    port = port or free_port()
    command = [sys.executable, "-m", "chute", "serve", "--port", str(port), "--data", str(data)]
    command += ["--rows", str(SERVICE_ROWS), "--log-level", "info", *extra]
    with log_path.open("ab") as log:  # a restarted server appends
        environment = {**os.environ, "CHUTE_PUBLISH_TOKEN": PUBLISH_TOKEN, "CHUTE_HEARTBEAT": "0.5"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, time.monotonic() + 60, process)
        yield Service(base_url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.fixture(scope="session")
def granian_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("data"), "--server", "granian") as running:
        yield running
