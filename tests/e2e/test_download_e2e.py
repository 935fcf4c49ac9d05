"""``chute get`` against the reference service (``chute serve`` in a subprocess) and small apps on uvicorn:
names, errors, and a client process killed with SIGINT and SIGKILL, then run again to completion."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from chute import FileStream
from chute.cli import app
from chute.service.samples import BIG_NAME, BIG_SIZE, NON_ASCII_NAME
from tests.e2e.conftest import Service

ServeApp = Callable[[ASGIApp], str]
runner = CliRunner()


def files_of(service: Service) -> Path:
    return service.log_path.parent / "files"  # the service's default files folder, <data>/files


def test_get_saves_the_file_and_says_so(service: Service, tmp_path: Path) -> None:
    target = tmp_path / "readme.txt"
    result = runner.invoke(app, ["get", f"{service.base_url}/download-file/readme.txt", "-o", str(target)])
    expected = (files_of(service) / "readme.txt").read_bytes()
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == expected
    # The digest note depends on whether the service has hashed the file yet (it does so in the background).
    assert re.search(rf"saved {re.escape(str(target))} \({len(expected):,} bytes(, sha-256 verified)?\)", result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readme.txt"]


def test_quiet_prints_nothing(service: Service, tmp_path: Path) -> None:
    target = tmp_path / "orders.csv"
    url = f"{service.base_url}/download-file/orders-extract.csv"
    result = runner.invoke(app, ["get", url, "-o", str(target), "--quiet"])
    assert result.exit_code == 0
    assert result.output == ""
    assert target.read_bytes() == (files_of(service) / "orders-extract.csv").read_bytes()


def test_the_default_name_is_the_servers_non_ascii_name(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["get", f"{service.base_url}/download-file/{quote(NON_ASCII_NAME)}"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == [NON_ASCII_NAME]
    assert (tmp_path / NON_ASCII_NAME).read_bytes() == (files_of(service) / NON_ASCII_NAME).read_bytes()


def test_content_disposition_wins_over_the_url_and_a_folder_output_is_filled(
    tmp_path: Path, serve_app: ServeApp
) -> None:
    (tmp_path / "data.csv").write_bytes(b"a,b\r\n")

    async def named(scope: Scope, receive: Receive, send: Send) -> None:
        await FileStream("data.csv", root=tmp_path, filename="rapport été.csv")(scope, receive, send)

    folder = tmp_path / "into"
    folder.mkdir()
    result = runner.invoke(app, ["get", f"{serve_app(named)}/some/url", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "rapport été.csv").read_bytes() == b"a,b\r\n"


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('attachment; filename="../../x"', "x"),
        ("attachment; filename*=UTF-8''..%2F..%2Fy", "y"),
        ('attachment; filename="/tmp/abs"', "abs"),
        ('attachment; filename="..\\\\..\\\\z"', "z"),
        ('attachment; filename=".."', "fallback.bin"),
    ],
)
def test_a_malicious_content_disposition_cannot_write_outside_the_current_folder(
    tmp_path: Path, serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch, disposition: str, name: str
) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    base = serve_app(Response(b"payload", headers={"content-disposition": disposition}))
    result = runner.invoke(app, ["get", f"{base}/fallback.bin"])
    assert result.exit_code == 0, result.output
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [f"a/b/{name}"]
    assert (here / name).read_bytes() == b"payload"


def test_a_404_is_one_line_and_exit_code_1(service: Service, tmp_path: Path) -> None:
    target = tmp_path / "nothing.bin"
    result = runner.invoke(app, ["get", f"{service.base_url}/download-file/nothing.bin", "-o", str(target)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: GET {service.base_url}/download-file/nothing.bin: 404 Not Found: no file named 'nothing.bin'"
    ]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_with_force(service: Service, tmp_path: Path) -> None:
    target = tmp_path / "readme.txt"
    target.write_text("mine")
    url = f"{service.base_url}/download-file/readme.txt"
    refused = runner.invoke(app, ["get", url, "-o", str(target)])
    assert (refused.exit_code, target.read_text()) == (1, "mine")
    assert "exists" in refused.output
    forced = runner.invoke(app, ["get", url, "-o", str(target), "--force", "-q"])
    assert forced.exit_code == 0
    assert target.read_bytes() == (files_of(service) / "readme.txt").read_bytes()


def _start_get(url: str, target: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "chute", "get", url, "-o", str(target), "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_part(process: subprocess.Popen[bytes], part: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while not part.exists() or part.stat().st_size < at_least:
        assert process.poll() is None, "the download ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.002)


def test_a_client_interrupted_then_killed_resumes_and_verifies_the_digest(service: Service, tmp_path: Path) -> None:
    url = f"{service.base_url}/download-file/{BIG_NAME}"
    target = tmp_path / "big.bin"
    part = tmp_path / "big.bin.part"
    mib = 1024 * 1024

    # Ctrl-C: the CLI stops cleanly, says how to resume, exits 130.
    first = _start_get(url, target)
    _wait_for_part(first, part, 8 * mib)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130
    assert b"the same command resumes the download" in stderr
    after_interrupt = part.stat().st_size

    # kill -9: no chance to clean up; the next run must still be able to trust the .part.
    second = _start_get(url, target)
    _wait_for_part(second, part, after_interrupt + 8 * mib)
    second.kill()
    second.communicate(timeout=30)
    kept = part.stat().st_size
    assert after_interrupt + 8 * mib <= kept < BIG_SIZE
    assert (tmp_path / "big.bin.part.json").exists()

    # The service hashes a version in the background after its first request: wait until it announces it, so
    # that the last run has a digest to check.
    deadline = time.monotonic() + 30
    while "repr-digest" not in httpx.head(url).headers:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    result = runner.invoke(app, ["get", url, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert f"resuming at {kept:,} bytes" in result.output
    assert f"saved {target} ({BIG_SIZE:,} bytes, resumed at {kept:,}, sha-256 verified)" in result.output
    assert target.stat().st_size == BIG_SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]
