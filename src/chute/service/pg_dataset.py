"""The embedded dataset's rows (:mod:`chute.service.dataset`) loaded into PostgreSQL, for exports from a real server.

The tables mirror the SQLite ones column for column, with the same types (timestamps as ISO 8601 text, money as
exact decimal text), so both databases export the same values. Rows go in with ``COPY`` (asyncpg's
``copy_records_to_table``) in one transaction, tables and all: a load that fails or is interrupted leaves nothing
behind, and ``chute_meta`` (version, rows) says what a finished load holds, so a second load of the same size is
skipped.
"""

from __future__ import annotations

import asyncpg

from chute.service.dataset import VERSION, generate

SCHEMA = """
CREATE TABLE customers (id bigint NOT NULL, name text NOT NULL, email text NOT NULL, country text NOT NULL,
                        created_at text NOT NULL);
CREATE TABLE orders (id bigint NOT NULL, customer_id bigint NOT NULL, customer text NOT NULL,
                     country text NOT NULL, product text NOT NULL, quantity integer NOT NULL,
                     unit_price text NOT NULL, total text NOT NULL, status text NOT NULL, created_at text NOT NULL);
CREATE TABLE chute_meta (version integer NOT NULL, rows bigint NOT NULL);
"""
TABLES = ("customers", "orders", "chute_meta")
ORDER_COLUMNS = (
    "id",
    "customer_id",
    "customer",
    "country",
    "product",
    "quantity",
    "unit_price",
    "total",
    "status",
    "created_at",
)
KEYS = """
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
"""


async def loaded_rows(connection: asyncpg.Connection) -> int | None:
    """The order count of the dataset loaded in the database, ``None`` when there is none of this version."""
    if await connection.fetchval("SELECT to_regclass('chute_meta')") is None:
        return None
    row = await connection.fetchrow("SELECT version, rows FROM chute_meta")
    return int(row["rows"]) if row is not None and row["version"] == VERSION else None


async def load(url: str, rows: int) -> bool:
    """Load the dataset for ``rows`` orders into the database at ``url``, replacing any other; ``False`` when it
    was already loaded with that many rows (nothing done)."""
    connection = await asyncpg.connect(url)
    try:
        if await loaded_rows(connection) == rows:
            return False
        customers, orders = generate(rows)
        async with connection.transaction():
            await connection.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
            await connection.execute(SCHEMA)
            await connection.copy_records_to_table("customers", records=customers)
            # asyncpg draws the generator as it writes, so memory stays flat whatever the row count.
            await connection.copy_records_to_table("orders", records=orders)
            # The keys' indexes are built once, after the rows: several times faster than row by row.
            await connection.execute(KEYS)
            await connection.execute("INSERT INTO chute_meta VALUES ($1, $2)", VERSION, rows)
        # Fresh statistics, so the planner picks the primary key's index for ORDER BY id ... LIMIT at once.
        await connection.execute("ANALYZE customers, orders")
    finally:
        await connection.close()
    return True
