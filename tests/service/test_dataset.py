"""The embedded dataset: deterministic, realistic, rebuilt only when it must be."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from chute.service import dataset


def digest(path: Path, table: str) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_the_same_rows_give_the_same_data(tmp_path: Path) -> None:
    first = dataset.ensure(tmp_path / "a", 3000)
    second = dataset.ensure(tmp_path / "b", 3000)
    assert digest(first, "orders") == digest(second, "orders")
    assert digest(first, "customers") == digest(second, "customers")


def test_tables_look_like_a_shop(tmp_path: Path) -> None:
    path = dataset.ensure(tmp_path, 2000)
    found = dataset.datasets(path)
    assert found["orders"].rows == 2000
    assert found["customers"].rows == 20
    assert "chute_meta" not in found
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT customer FROM orders")]
        stamps = [row[0] for row in db.execute("SELECT created_at FROM orders ORDER BY id")]
        money = db.execute("SELECT unit_price, quantity, total FROM orders").fetchall()
    assert any(not name.isascii() for name in names)
    assert any("," in name for name in names)  # CSV quoting gets exercised
    assert stamps == sorted(stamps)
    assert all(stamp.endswith("Z") and len(stamp) == 20 for stamp in stamps)
    from decimal import Decimal

    assert all(Decimal(price) * quantity == Decimal(total) for price, quantity, total in money)


def test_an_existing_dataset_is_reused_and_a_different_size_rebuilt(tmp_path: Path) -> None:
    path = dataset.ensure(tmp_path, 100)
    mtime = path.stat().st_mtime_ns
    assert dataset.ensure(tmp_path, 100).stat().st_mtime_ns == mtime
    dataset.ensure(tmp_path, 200)
    assert dataset.datasets(path)["orders"].rows == 200
    assert [p.name for p in tmp_path.iterdir()] == [dataset.FILENAME]  # no partial files left behind


def test_a_corrupt_file_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / dataset.FILENAME).write_bytes(b"not a database")
    path = dataset.ensure(tmp_path, 50)
    assert dataset.datasets(path)["orders"].rows == 50
