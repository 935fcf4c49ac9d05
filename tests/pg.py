"""Throwaway PostgreSQL databases on the test server (127.0.0.1:5432, trust auth; ``scripts/services`` starts it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator

import asyncpg

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def throwaway_database(prefix: str = "chute_test") -> Iterator[str]:
    """A new empty database with a name no other test session uses; its URL. Dropped on exit, sessions and all."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{SERVER}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
