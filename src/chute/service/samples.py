"""The sample files of the reference service's default files folder, created on first start.

A small text file, a CSV extract, a file with a non-ASCII name (for ``Content-Disposition``), and a 1 GiB file
created sparse, so it costs no disk and no time to make, yet streams like any other file.
"""

from __future__ import annotations

import os
from pathlib import Path

BIG_NAME = "big-1GiB.bin"
BIG_SIZE = 1 << 30
NON_ASCII_NAME = "données été 2026 — résumé.csv"


def ensure(folder: Path) -> Path:
    """Create ``folder`` with the sample files that are missing; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "readme.txt"
    if not readme.exists():
        readme.write_text(
            "Files served by the chute reference service.\n"
            "Try: curl -r 0-99 http://127.0.0.1:8000/download-file/big-1GiB.bin | xxd | head\n",
            encoding="utf-8",
        )
    extract = folder / "orders-extract.csv"
    if not extract.exists():
        rows = [f"{i},customer {i},{i * 1.25:.2f}" for i in range(1, 10_001)]
        extract.write_text("id,customer,total\r\n" + "\r\n".join(rows) + "\r\n", encoding="utf-8")
    accented = folder / NON_ASCII_NAME
    if not accented.exists():
        accented.write_text("ville,température\r\nZürich,3.5\r\nSão Paulo,24.0\r\n", encoding="utf-8")
    big = folder / BIG_NAME
    if not big.exists() or big.stat().st_size != BIG_SIZE:
        with big.open("wb") as file:
            file.truncate(BIG_SIZE)
    return folder


def listing(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Regular files under ``folder`` (relative names, '/'-separated) with their stat, symlinks not followed."""
    found = []
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(directory, name)
            stat = path.lstat()
            if path.is_file() and not path.is_symlink():
                found.append((path.relative_to(folder).as_posix(), stat))
    return found
