"""The embedded default data: a deterministic SQLite dataset, generated on first start.

``orders`` (``rows`` rows) and ``customers`` (one per hundred orders, at least ten) look like a shop's tables:
names in many scripts, ISO 8601 UTC timestamps, money as exact decimal text. The same ``rows`` always gives the same
bytes, so exports can be checked by checksum. The file is built under a temporary name and renamed into place, so
an interrupted first start never leaves a half-built dataset behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

FILENAME = "chute.sqlite3"
VERSION = 1
SEED = 20231027

FIRST_NAMES = [
    "Ada",
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Amélie",
    "Ngozi",
    "Björk",
    "Mateus",
    "Chloé",
    "Иван",
    "Αλέξανδρος",
    "さくら",
    "李",
    "Aarav",
    "Fatima",
    "Oğuz",
    "Mía",
    "Nguyễn",
    "Kwame",
]
LAST_NAMES = [
    "Lovelace",
    "García",
    "Müller",
    "Kowalski",
    "Nørgaard",
    "Dubois",
    "Okafor",
    "Guðmundsdóttir",
    "Silva",
    "Petrov",
    "Παπαδόπουλος",
    "山田",
    "王",
    "Sharma",
    "Al-Sayed",
    "Yılmaz",  # noqa: RUF001 (Turkish dotless i)
    "O'Brien",
    "Smith, Jr.",
    "Trần",
    "Mensah",
]
COUNTRIES = [
    "US",
    "DE",
    "FR",
    "GB",
    "PL",
    "DK",
    "NG",
    "IS",
    "BR",
    "RU",
    "GR",
    "JP",
    "CN",
    "IN",
    "EG",
    "TR",
    "IE",
    "MX",
    "VN",
    "GH",
]
PRODUCTS = {
    "Widget": "2.50",
    "Gadget": "12.99",
    "Gizmo": "7.25",
    "Doohickey": "0.99",
    "Thingamajig": "149.00",
    "Sprocket": "3.10",
    "Flux capacitor": "1210.00",
    "Café crème": "3.40",
    "Ångström ruler": "18.75",
    "Bolt, 10 mm": "0.15",
}
STATUSES = ["placed", "paid", "shipped", "delivered", "returned"]
EPOCH = datetime.datetime(2023, 10, 27, 10, 0, tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A table on offer: its name (the table's), its columns, its row count and the unique key its exports are
    ordered by (and resumed after)."""

    name: str
    columns: tuple[str, ...]
    rows: int
    key: str = "id"


PARSERS: dict[str, Callable[[str], object]] = {
    "created_at": datetime.datetime.fromisoformat,
    "unit_price": Decimal,
    "total": Decimal,
}
"""The columns SQLite keeps as text (ISO 8601 timestamps, exact money) and the types they stand for."""


def typed(batches: Iterable[list[Any]]) -> Iterator[list[Any]]:
    """``batches`` of row Structs with the text columns of :data:`PARSERS` parsed into their types (a copy)."""
    for batch in batches:
        if not batch:
            continue
        fields = [(name, PARSERS[name]) for name in batch[0].__struct_fields__ if name in PARSERS]
        yield [
            msgspec.structs.replace(row, **{name: parse(getattr(row, name)) for name, parse in fields}) for row in batch
        ]


def ensure(folder: Path, rows: int) -> Path:
    """The dataset file in ``folder`` for ``rows`` orders, generating it if it is missing or different."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    if path.exists() and _meta(path) == (VERSION, rows):
        return path
    partial = folder / f"{FILENAME}.{os.getpid()}.partial"
    partial.unlink(missing_ok=True)
    try:
        _generate(partial, rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _meta(path: Path) -> tuple[int, int] | None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT version, rows FROM chute_meta").fetchone()
    except sqlite3.Error:
        return None
    return (int(row[0]), int(row[1])) if row else None


def _generate(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                                    country TEXT NOT NULL, created_at TEXT NOT NULL);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, customer TEXT NOT NULL,
                                 country TEXT NOT NULL, product TEXT NOT NULL, quantity INTEGER NOT NULL,
                                 unit_price TEXT NOT NULL, total TEXT NOT NULL, status TEXT NOT NULL,
                                 created_at TEXT NOT NULL);
            CREATE TABLE chute_meta (version INTEGER NOT NULL, rows INTEGER NOT NULL);
            """
        )
        customers, orders = generate(rows)
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", customers)
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", orders)
        db.execute("INSERT INTO chute_meta VALUES (?, ?)", (VERSION, rows))
        db.commit()
    finally:
        db.close()


Customer = tuple[int, str, str, str, str]
"""``id, name, email, country, created_at``"""
Order = tuple[int, int, str, str, str, int, str, str, str, str]
"""``id, customer_id, customer, country, product, quantity, unit_price, total, status, created_at``"""


def generate(rows: int) -> tuple[list[Customer], Iterator[Order]]:
    """The customers and (lazily) the orders for ``rows`` orders: the same rows on every call, whichever database
    they are loaded into (:mod:`chute.service.pg_dataset` loads them into PostgreSQL)."""
    rng = random.Random(SEED)
    customers = list(_customers(rng, max(10, rows // 100)))
    return customers, _orders(rng, rows, customers)


def _timestamp(seconds: int) -> str:
    # isoformat() is several times faster than strftime(); the slice drops the "+00:00" that "Z" replaces.
    return (EPOCH + datetime.timedelta(seconds=seconds)).isoformat()[:19] + "Z"


def _customers(rng: random.Random, count: int) -> Iterator[Customer]:
    firsts = rng.choices(FIRST_NAMES, k=count)
    lasts = rng.choices(LAST_NAMES, k=count)
    countries = rng.choices(COUNTRIES, k=count)
    for i in range(count):
        yield i + 1, f"{firsts[i]} {lasts[i]}", f"customer{i + 1}@example.com", countries[i], _timestamp(-i * 3600)


def _orders(rng: random.Random, count: int, customers: list[Customer]) -> Iterator[Order]:
    step = 4096
    names = list(PRODUCTS)
    totals = {(name, q): str(Decimal(price) * q) for name, price in PRODUCTS.items() for q in range(1, 10)}
    for start in range(0, count, step):
        n = min(step, count - start)
        # Column-wise draws keep generation at a few seconds per million rows.
        who = rng.choices(customers, k=n)
        products = rng.choices(names, k=n)
        quantities = rng.choices(range(1, 10), k=n)
        statuses = rng.choices(STATUSES, k=n)
        gaps = rng.choices(range(1, 60), k=n)
        seconds = start * 30
        for i in range(n):
            seconds += gaps[i]
            customer = who[i]
            product = products[i]
            quantity = quantities[i]
            yield (
                start + i + 1,
                customer[0],
                customer[1],
                customer[3],
                product,
                quantity,
                PRODUCTS[product],
                totals[product, quantity],
                statuses[i],
                _timestamp(seconds),
            )


def datasets(path: Path) -> dict[str, Dataset]:
    """The tables on offer in the dataset file, by name (internal tables left out)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'chute_%' ORDER BY name"
            )
        ]
        found = {}
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            info = db.execute(f"PRAGMA table_info({quoted})").fetchall()
            columns = tuple(row[1] for row in info)
            primary = [row[1] for row in info if row[5]]  # (cid, name, type, notnull, default, pk)
            (count,) = db.execute(f"SELECT count(*) FROM {quoted}").fetchone()
            found[name] = Dataset(name, columns, int(count), key=primary[0] if len(primary) == 1 else "rowid")
    return found
