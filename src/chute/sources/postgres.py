"""PostgreSQL sources: a table's rows in batches through a server-side cursor, or as CSV straight from ``COPY``.

Both borrow one connection from an asyncpg pool for the duration of the stream and give it back the moment the
stream ends, fails, is closed (``aclose()``) or is cancelled: the client leaving must never cost a connection.

:func:`postgres_table` reads in the order of a unique key through a cursor in a read-only transaction, ``fetch_size``
rows per round trip, continuing after a key value (keyset pagination, as :func:`chute.sources.sql.sqlite_table`).
Rows come as msgspec Structs (:func:`chute.sources.sql.row_type`), so the encoders write JSON objects without a
dict per row.

:func:`postgres_table_csv` lets the server write the CSV (``COPY (SELECT ...) TO STDOUT``), far cheaper than
decoding rows and encoding them again. Theory of operation: asyncpg pushes COPY output into a coroutine, one call
per batch of ``CopyData`` messages read from the socket, and reads no further until that call returns. A task runs
the COPY and sends each batch into a bounded memory object stream; the async generator (the consumer) takes
whatever has arrived, up to ``CHUNK_TARGET`` bytes, and yields it. A slow client blocks the consumer, the stream
fills, the COPY task blocks in its send, asyncpg stops reading the socket, and PostgreSQL stops writing:
backpressure reaches the server with at most ``COPY_BUFFER`` batches held here. Closing or cancelling the consumer
cancels the task, which aborts the COPY by closing its connection (see :func:`_copy` for why it is not reused).

Identifiers are never taken on trust: the table must exist (else :class:`~chute.exceptions.NotFound`) and every
requested column must be one of its columns (else :class:`~chute.exceptions.BadRequest`); both are then quoted
with :func:`~chute.sources.sql.quote_identifier`. Values (``after``, ``limit``) are bound as parameters.
COPY writes LF line ends where RFC 4180 says CRLF; every CSV reader accepts both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import anyio
import asyncpg
from anyio.streams.memory import MemoryObjectSendStream

from chute.exceptions import BadRequest, NotFound
from chute.sources.iterables import CLOSE_TIMEOUT
from chute.sources.sql import quote_identifier, row_type

FETCH_SIZE = 4096
"""Rows per cursor round trip: large enough that the round trip is noise, small enough to stay a few MB."""
COPY_BUFFER = 16
"""Batches of COPY output held between the COPY task and the consumer (asyncpg's batches are socket reads)."""
CHUNK_TARGET = 256 * 1024
"""The consumer joins arrived batches up to about this many bytes per chunk it yields."""

Pool = asyncpg.Pool
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    """A connection pool for ``url`` (``postgresql://user@host:port/db``), its sessions named ``chute`` in
    ``pg_stat_activity``."""
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings={"application_name": "chute"}
    )


@contextlib.asynccontextmanager
async def _read_only(pool: Pool) -> AsyncIterator[Connection]:
    """A pooled connection in a read-only transaction, given back to the pool however the block ends."""
    connection = await pool.acquire()
    try:
        await connection.execute("BEGIN TRANSACTION READ ONLY")
        yield connection
    finally:
        # Shielded: the block ends in a cancelled task as often as not (the client left), where anyio would cancel
        # every await again. A query cut short by the cancellation is cancelled in the server first (asyncpg sends
        # a cancel request and the ROLLBACK waits for it); release() closes the connection rather than return it
        # when it cannot be reset in time, so it is never lost either way.
        with anyio.CancelScope(shield=True):
            # Always: a BEGIN cut short may not have been acknowledged yet (outside a transaction, ROLLBACK is a
            # no-op with a warning nobody listens to). Any failure here (a lost connection, asyncpg's own state
            # errors) means the connection is unusable, and release() then closes it.
            with anyio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(Exception):
                if not connection.is_closed():
                    await connection.execute("ROLLBACK")
            await pool.release(connection, timeout=CLOSE_TIMEOUT)


async def table_columns(connection: Connection, table: str) -> tuple[str, ...]:
    """The columns of ``table`` (resolved on the search path) in table order; :class:`NotFound` when there is
    no such table."""
    rows = await connection.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        quote_identifier(table),
    )
    if not rows:
        raise NotFound(f"no table {table!r}")
    return tuple(row[0] for row in rows)


async def _select(
    connection: Connection, table: str, columns: Sequence[str] | None, key: str, *, after: bool
) -> tuple[str, tuple[str, ...]]:
    """The ``SELECT`` of a keyset page (``$1`` the limit, ``$2`` the key to continue after) and its columns, all
    checked against the catalog."""
    known = await table_columns(connection, table)
    selected = tuple(columns) if columns is not None else known
    unknown = [name for name in (*selected, key) if name not in known]
    if unknown or not selected:
        raise BadRequest(f"unknown columns of {table!r}: {', '.join(map(repr, unknown))}" if unknown else "no columns")
    where = f" WHERE {quote_identifier(key)} > $2" if after else ""
    query = (
        f"SELECT {', '.join(map(quote_identifier, selected))} FROM {quote_identifier(table)}{where}"
        f" ORDER BY {quote_identifier(key)} LIMIT $1"
    )
    return query, selected


async def postgres_table(
    pool: Pool,
    table: str,
    *,
    columns: Sequence[str] | None = None,
    key: str = "id",
    after: Any = None,
    limit: int | None = None,
    fetch_size: int = FETCH_SIZE,
) -> AsyncGenerator[list[Any], None]:
    """Batches of ``table``'s rows in the order of its unique ``key``, those after the key value ``after`` (all
    when ``None``), at most ``limit`` of them.

    ``columns`` (default: all) are selected in that order; rows are Structs of them (see
    :func:`~chute.sources.sql.row_type`), or tuples when a name cannot be a field. Nothing is acquired until the
    first batch is asked for; the connection goes back to the pool when the generator ends or is closed.
    """
    async with _read_only(pool) as connection:
        query, selected = await _select(connection, table, columns, key, after=after is not None)
        parameters = (limit,) if after is None else (limit, after)
        cursor = await connection.cursor(query, *parameters)
        make = row_type(selected) or tuple
        while batch := await cursor.fetch(fetch_size):
            # starmap unpacks each Record (a sequence) straight into the Struct's constructor: with a list
            # comprehension of Row(*record) the fastest way measured, ~3.4M rows/s, 3.6x Row(**record) (see
            # ./scripts/bench-postgres --conversions). Tuples would be no faster and encode 3x slower as objects.
            yield list(itertools.starmap(make, batch)) if make is not tuple else list(map(tuple, batch))


async def postgres_table_csv(
    pool: Pool,
    table: str,
    *,
    columns: Sequence[str] | None = None,
    key: str = "id",
    limit: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """``table``'s rows as CSV with a header row, in the order of ``key``, at most ``limit`` of them, written by
    PostgreSQL's ``COPY`` and streamed with backpressure (see the module's theory of operation)."""
    send, receive = anyio.create_memory_object_stream[bytes](COPY_BUFFER)
    failure: list[Exception] = []
    # A plain asyncio task, not a task group: a generator must not yield inside a cancel scope (the consumer's
    # own scopes would nest in it), and asyncpg runs on asyncio only anyway. The finally block owns the task.
    copy = asyncio.get_running_loop().create_task(_copy(pool, table, columns, key, limit, send, failure))
    try:
        async with receive:
            async for first in receive:
                parts, size = [first], len(first)
                while size < CHUNK_TARGET:
                    try:
                        part = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    parts.append(part)
                    size += len(part)
                yield first if len(parts) == 1 else b"".join(parts)
    finally:
        # Leaving early (closed, cancelled, failed): abort the COPY now rather than when it next blocks, and wait
        # (shielded, briefly) until its connection is back in the pool.
        copy.cancel()
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await asyncio.wait([copy])
    if failure:
        raise failure[0]


async def _copy(
    pool: Pool,
    table: str,
    columns: Sequence[str] | None,
    key: str,
    limit: int | None,
    send: MemoryObjectSendStream[bytes],
    failure: list[Exception],
) -> None:
    # Failures are handed to the consumer as they are (a task group would wrap them in an ExceptionGroup, and a
    # NotFound must stay a NotFound to become a 404).
    async with send:
        try:
            async with _read_only(pool) as connection:
                query, _ = await _select(connection, table, columns, key, after=False)
                flowing = False

                async def output(data: bytes) -> None:
                    nonlocal flowing
                    flowing = True
                    await send.send(data)

                try:
                    await connection.copy_from_query(
                        query, limit, output=output, format="csv", header=True, encoding="utf-8"
                    )
                except BaseException as exc:
                    if flowing and not isinstance(exc, asyncpg.PostgresError):
                        # Cut short by us (cancelled, or the consumer is gone) while data flows. asyncpg cannot
                        # take a connection back from such a COPY: it takes the next batch of COPY data for the
                        # end of the cancelled command, then refuses every query. So the connection is closed
                        # instead; the backend, busy writing to it, ends at once, and the pool opens a fresh
                        # connection when it needs one. (Before the first data, say waiting on a lock, asyncpg's
                        # own cancel request stops the COPY in the server and the connection is reused.)
                        connection.terminate()
                    raise
        except Exception as exc:
            failure.append(exc)
