"""SQL sources: a query's rows in batches through a server-side cursor, never the whole result in memory.

SQLite steps its cursor lazily, so ``fetchmany`` pulls only the next rows. The generator opens its connection on
first use, which happens in the worker thread that drains it (see :mod:`chute.sources.iterables`); it may be
resumed by another worker thread later, one hop at a time, hence ``check_same_thread=False``. Closing the generator
(the client left, or the stream ended) closes the cursor and the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

FETCH_SIZE = 2048


def quote_identifier(name: str) -> str:
    """An SQL identifier quoted for SQLite/PostgreSQL; only ever applied to names from an allowlist."""
    return '"' + name.replace('"', '""') + '"'


def sqlite_batches(
    path: Path, query: str, parameters: Sequence[Any] = (), *, fetch_size: int = FETCH_SIZE
) -> Generator[list[tuple[Any, ...]], None, None]:
    """Batches of rows of a parameterized read-only ``query`` on the SQLite file at ``path``."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        cursor = db.execute(query, parameters)
        try:
            while batch := cursor.fetchmany(fetch_size):
                yield batch
        finally:
            cursor.close()
    finally:
        db.close()


def sqlite_table(
    path: Path, table: str, *, order_by: str = "rowid", limit: int | None = None
) -> Generator[list[tuple[Any, ...]], None, None]:
    """Batches of a whole table in a stable order; ``table`` and ``order_by`` must come from an allowlist."""
    query = f"SELECT * FROM {quote_identifier(table)} ORDER BY {quote_identifier(order_by)} LIMIT ?"
    return sqlite_batches(path, query, (-1 if limit is None else limit,))
