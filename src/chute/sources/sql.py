"""SQL sources: a query's rows in batches through a server-side cursor, never the whole result in memory.

SQLite steps its cursor lazily, so ``fetchmany`` pulls only the next rows. The generator opens its connection on
first use, which happens in the worker thread that drains it (see :mod:`chute.sources.iterables`); it may be
resumed by another worker thread later, one hop at a time, hence ``check_same_thread=False``. Closing the generator
(the client left, or the stream ended) closes the cursor and the connection.

A whole table is read in the order of a unique key, and continues after a key value (keyset pagination:
``WHERE key > ? ORDER BY key``, never ``OFFSET``, so resuming deep into a table costs an index seek, not a scan of
everything before). Table rows come as msgspec Structs with one field per column (see :func:`row_type`): the
encoders write them as JSON objects without building a dict per row, and a row reads by name (``row.id``).
:mod:`chute.sources.postgres` does the same for PostgreSQL.
"""

from __future__ import annotations

import functools
import itertools
import keyword
import sqlite3
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import msgspec

FETCH_SIZE = 512
"""Rows per fetch: a batch is also the smallest unit an export releases, so with rows of a few hundred bytes it
makes ~100 KB chunks (resume points that close together) while a fetch still costs far less than encoding."""


def quote_identifier(name: str) -> str:
    """An SQL identifier quoted for SQLite/PostgreSQL; only ever applied to names from an allowlist."""
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=256)
def row_type(columns: tuple[str, ...]) -> type[msgspec.Struct] | None:
    """A Struct type with one field per column, or ``None`` when a column name cannot be a field (a keyword, a
    name that is not an identifier or starts with ``_``, a duplicate): rows then stay tuples in column order.

    Structs encode as JSON objects about three times faster than tuples zipped with the header into dicts.
    They are built with ``gc=False``: their fields hold database values (numbers, strings, bytes), which form no
    reference cycles, so the garbage collector need not track millions of short-lived rows.
    """
    usable = all(name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_") for name in columns)
    if not columns or not usable or len(set(columns)) != len(columns):
        return None
    return msgspec.defstruct("Row", [(name, Any) for name in columns], gc=False)


def sqlite_batches(
    path: Path, query: str, parameters: Sequence[Any] = (), *, fetch_size: int = FETCH_SIZE
) -> Generator[list[tuple[Any, ...]], None, None]:
    """Batches of rows (tuples) of a parameterized read-only ``query`` on the SQLite file at ``path``."""
    return _rows(path, query, parameters, fetch_size, structs=False)


def sqlite_table(
    path: Path,
    table: str,
    *,
    columns: Sequence[str] | None = None,
    key: str = "rowid",
    after: Any = None,
    limit: int | None = None,
    fetch_size: int = FETCH_SIZE,
) -> Generator[list[Any], None, None]:
    """Batches of a table's rows in the order of its unique ``key``, those after the key value ``after`` (all
    when ``None``), at most ``limit`` of them.

    ``columns`` (default: all) are selected in that order; rows are Structs of them (see :func:`row_type`), or
    tuples when a name cannot be a field. ``table``, ``columns`` and ``key`` must come from an allowlist;
    ``after`` and ``limit`` are bound as parameters.
    """
    selected = ", ".join(map(quote_identifier, columns)) if columns else "*"
    where, parameters = ("", []) if after is None else (f" WHERE {quote_identifier(key)} > ?", [after])
    query = f"SELECT {selected} FROM {quote_identifier(table)}{where} ORDER BY {quote_identifier(key)} LIMIT ?"
    return _rows(path, query, [*parameters, -1 if limit is None else limit], fetch_size, structs=True)


def _rows(
    path: Path, query: str, parameters: Sequence[Any], fetch_size: int, *, structs: bool
) -> Generator[list[Any], None, None]:
    # A generator: nothing is opened until the first batch is asked for (in the worker thread that drains it).
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        cursor = db.execute(query, parameters)
        try:
            make = row_type(tuple(column[0] for column in cursor.description or ())) if structs else None
            while batch := cursor.fetchmany(fetch_size):
                yield batch if make is None else list(itertools.starmap(make, batch))
        finally:
            cursor.close()
    finally:
        db.close()
