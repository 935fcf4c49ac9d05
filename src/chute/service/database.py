"""Where the service's exports come from: the embedded SQLite dataset, or a database named in the settings.

A backend offers named datasets (tables, never SQL from the client), each read in the order of its unique key and
continued after a key value (keyset pagination), which is what makes every export resumable. A backend may also
offer a native CSV stream of a dataset (a database's own ``COPY``), which the service prefers for CSV.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from chute.service import dataset
from chute.service.dataset import Dataset
from chute.sources.postgres import Pool, create_pool, postgres_table, postgres_table_csv
from chute.sources.sql import quote_identifier, sqlite_table
from chute.tokens import Key

Batches = Iterable[list[Any]] | AsyncIterable[list[Any]]
"""Batches of rows, each row with one attribute per column (see :func:`chute.sources.sql.row_type`)."""


class Database(Protocol):
    """A source of datasets for the export endpoints."""

    datasets: dict[str, Dataset]
    """The datasets on offer, by name."""

    def rows(self, found: Dataset, *, after: Key | None, limit: int | None, typed: bool = False) -> Batches:
        """Batches of ``found``'s rows in key order, those after the key value ``after``, at most ``limit``.
        ``typed`` asks for dates as ``datetime`` and money as ``Decimal`` even where the database stores text
        (to localize them); the JSON text of a row is the same either way."""
        ...

    def csv(self, found: Dataset, *, limit: int | None) -> AsyncIterable[bytes] | None:
        """The dataset as CSV bytes (header first) produced by the database itself, or ``None`` when the backend
        has no such fast path."""
        ...

    async def aclose(self) -> None:
        """Release the backend's connections."""
        ...


class SQLiteDatabase:
    """The embedded dataset: a SQLite file generated on first start, read by worker threads."""

    def __init__(self, path: Path, datasets: dict[str, Dataset]) -> None:
        self.path = path
        self.datasets = datasets

    @classmethod
    async def open(cls, folder: Path, rows: int) -> SQLiteDatabase:
        """The dataset of ``rows`` orders in ``folder``, generated if missing or different."""
        path = await anyio.to_thread.run_sync(dataset.ensure, folder, rows)
        return cls(path, await anyio.to_thread.run_sync(dataset.datasets, path))

    def rows(self, found: Dataset, *, after: Key | None, limit: int | None, typed: bool = False) -> Batches:
        batches = sqlite_table(self.path, found.name, columns=found.columns, key=found.key, after=after, limit=limit)
        return dataset.typed(batches) if typed else batches

    def csv(self, found: Dataset, *, limit: int | None) -> None:
        return None  # chute's CSV encoder is the fastest way from SQLite rows to CSV

    async def aclose(self) -> None:
        return None  # every export opens and closes its own connection


class PostgresDatabase:
    """The tables of a PostgreSQL database (those with a one-column primary key, ``chute_*`` left out), read
    through a connection pool: rows through a server-side cursor, CSV straight from ``COPY``."""

    def __init__(self, pool: Pool, datasets: dict[str, Dataset]) -> None:
        self.pool = pool
        self.datasets = datasets

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """A pool for the database at ``url`` and the datasets it offers (``chute load-data`` fills it)."""
        pool = await create_pool(url)
        try:
            async with pool.acquire() as connection:
                tables = await connection.fetch(
                    """
                    SELECT c.relname AS name,
                           array_agg(a.attname::text ORDER BY a.attnum) AS columns,
                           (SELECT array_agg(k.attname::text) FROM pg_index i
                              JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY(i.indkey)
                             WHERE i.indrelid = c.oid AND i.indisprimary) AS primary_key
                      FROM pg_class c
                      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
                       AND c.relname NOT LIKE 'chute\\_%'
                     GROUP BY c.oid, c.relname ORDER BY c.relname
                    """
                )
                found = {}
                for table in tables:
                    if table["primary_key"] is None or len(table["primary_key"]) != 1:
                        continue  # no unique order to export (and resume) it in
                    count = await connection.fetchval(f"SELECT count(*) FROM {quote_identifier(table['name'])}")
                    found[table["name"]] = Dataset(
                        table["name"], tuple(table["columns"]), int(count), key=table["primary_key"][0]
                    )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, found)

    def rows(self, found: Dataset, *, after: Key | None, limit: int | None, typed: bool = False) -> Batches:
        batches = postgres_table(self.pool, found.name, columns=found.columns, key=found.key, after=after, limit=limit)
        return _typed(batches) if typed else batches

    def csv(self, found: Dataset, *, limit: int | None) -> AsyncIterable[bytes]:
        return postgres_table_csv(self.pool, found.name, columns=found.columns, key=found.key, limit=limit)

    async def aclose(self) -> None:
        await self.pool.close()


async def _typed(batches: AsyncGenerator[list[Any], None]) -> AsyncGenerator[list[Any], None]:
    # aclosing: closing this generator must close the cursor's at once, not when the collector finds it.
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for parsed in dataset.typed([batch]):
                yield parsed


async def open_database(url: str | None, folder: Path, rows: int) -> Database:
    """The PostgreSQL database at ``url``, or without one the embedded dataset of ``rows`` orders in ``folder``."""
    if url is not None:
        return await PostgresDatabase.open(url)
    return await SQLiteDatabase.open(folder, rows)
