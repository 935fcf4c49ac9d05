"""The ``chute`` command line (``chute serve`` itself runs in tests/e2e)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from chute import __version__
from chute.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


def test_help_lists_serve_and_its_flags() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--data", "--rows"):
        assert flag in result.stdout


@pytest.mark.parametrize(("flag", "value"), [("--rows", "-5"), ("--port", "70000"), ("--server", "apache")])
def test_serve_rejects_out_of_range_settings_clearly(flag: str, value: str) -> None:
    result = runner.invoke(app, ["serve", flag, value])
    assert result.exit_code == 2
    assert flag.removeprefix("--") in result.output


def test_environment_settings_are_validated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUTE_ROWS", "-1")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "rows" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    completed = subprocess.run([sys.executable, "-m", "chute", "version"], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == __version__
