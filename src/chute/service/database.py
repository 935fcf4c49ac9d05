"""Where the service's exports come from: the embedded SQLite dataset, or a database named in the settings.

A backend offers named datasets (tables, never SQL from the client), each read in the order of its unique key and
continued after a key value (keyset pagination), which is what makes every export resumable. A backend may also
offer a native CSV stream of a dataset (a database's own ``COPY``), which the service prefers for CSV.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from chute.service import dataset
from chute.service.dataset import Dataset
from chute.sources.sql import sqlite_table
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
