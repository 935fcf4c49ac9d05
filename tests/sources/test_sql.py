"""SQL sources: batches through a lazy cursor, and the connection released when the generator closes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chute.sources.sql import FETCH_SIZE, quote_identifier, sqlite_batches, sqlite_table


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "t.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "odd ""name""" (id INTEGER PRIMARY KEY, label TEXT)')
        db.executemany('INSERT INTO "odd ""name""" VALUES (?, ?)', [(i, f"row {i}") for i in range(1, 5001)])
    return path


def test_a_table_comes_in_batches_in_key_order(database: Path) -> None:
    batches = list(sqlite_table(database, 'odd "name"', key="id"))
    assert [len(batch) for batch in batches] == [FETCH_SIZE] * 9 + [5000 - 9 * FETCH_SIZE]
    assert [row.id for batch in batches for row in batch] == list(range(1, 5001))


def test_a_table_continues_after_a_key(database: Path) -> None:
    rows = [row for batch in sqlite_table(database, 'odd "name"', key="id", after=4990) for row in batch]
    assert [row.id for row in rows] == list(range(4991, 5001))
    assert rows[0].label == "row 4991"


def test_limit_and_parameters(database: Path) -> None:
    assert sum(len(b) for b in sqlite_table(database, 'odd "name"', limit=10)) == 10
    assert sum(len(b) for b in sqlite_table(database, 'odd "name"', limit=0)) == 0
    rows = [r for b in sqlite_batches(database, 'SELECT label FROM "odd ""name""" WHERE id = ?', (7,)) for r in b]
    assert rows == [("row 7",)]


def test_closing_the_generator_closes_the_connection(database: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    batches = sqlite_table(database, 'odd "name"')
    assert opened == []  # nothing is opened until the first batch is asked for (in the worker thread)
    next(batches)
    opened[0].execute("SELECT 1")
    batches.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")


def test_the_source_is_read_only(database: Path) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        list(sqlite_batches(database, 'DELETE FROM "odd ""name"""'))


def test_identifiers_are_quoted() -> None:
    assert quote_identifier('a"b') == '"a""b"'
