"""PostgreSQL sources on a real server: rows in key order, COPY's CSV, and never a connection kept or leaked."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from chute.exceptions import BadRequest, NotFound
from chute.responses.bytestream import ByteStream
from chute.responses.records import RecordStream
from chute.service import dataset, pg_dataset
from chute.sources.postgres import Pool, create_pool, postgres_table, postgres_table_csv
from tests.pg import throwaway_database
from tests.responses.test_records import Client, http_scope

pytestmark = pytest.mark.anyio

ROWS = 5000
BIG_ROWS = 300_000
"""Rows of ``big`` (about 30 MB of CSV): far more than socket buffers and the bridge hold."""
COLUMNS = pg_dataset.ORDER_COLUMNS


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    async def prepare(url: str) -> None:
        assert await pg_dataset.load(url, ROWS)
        assert not await pg_dataset.load(url, ROWS)  # already there: nothing to do
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE big AS SELECT g::bigint AS id, repeat('x', 100) AS pad FROM generate_series(1, $1) g",
                BIG_ROWS,
            )
        finally:
            await connection.close()

    with throwaway_database() as url:
        anyio.run(prepare, url)
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def observer(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection outside the pool, to watch the pool's sessions from the server's side."""
    connection = await asyncpg.connect(database_url, server_settings={"application_name": "observer"})
    try:
        yield connection
    finally:
        await connection.close()


def expected_orders() -> list[tuple[Any, ...]]:
    _, orders = dataset.generate(ROWS)
    return list(orders)


async def collect(source: AsyncIterator[list[Any]]) -> list[Any]:
    return [row for batch in [batch async for batch in source] for row in batch]


async def sessions(observer: asyncpg.Connection) -> list[asyncpg.Record]:
    """The pool's sessions as the server sees them now (state, what they wait on, their query)."""
    # Without clearing it, a transaction sees the statistics snapshot taken at its first look.
    return await observer.fetch(
        "SELECT pg_stat_clear_snapshot(), pid, state, wait_event_type, wait_event, query FROM pg_stat_activity"
        " WHERE application_name = 'chute' AND datname = current_database()"
    )


async def wait_for(condition: Callable[[], Awaitable[bool]], within: float) -> None:
    with anyio.fail_after(within):
        while True:
            if await condition():
                return
            await anyio.sleep(0.01)


async def wait_released(pool: Pool, observer: asyncpg.Connection, within: float = 1.0) -> None:
    """Every connection of the pool back in it, and idle on the server (no query, no open transaction)."""

    async def released() -> bool:
        states = [row["state"] for row in await sessions(observer)]
        return pool.get_idle_size() == pool.get_size() and states == ["idle"] * pool.get_size()

    await wait_for(released, within)


# -- rows


async def test_batches_come_in_key_order_with_the_embedded_datasets_rows(pool: Pool) -> None:
    batches = [batch async for batch in postgres_table(pool, "orders", fetch_size=1000)]
    assert [len(batch) for batch in batches] == [1000] * 5
    rows = [msgspec.structs.astuple(row) for batch in batches for row in batch]
    assert rows == expected_orders()  # the same data as the SQLite dataset, from the same generator
    assert batches[0][0].customer == expected_orders()[0][2]  # rows read by name


async def test_after_limit_and_columns(pool: Pool) -> None:
    assert [row.id for row in await collect(postgres_table(pool, "orders", after=4990))] == list(range(4991, 5001))
    assert [row.id for row in await collect(postgres_table(pool, "orders", after=10, limit=5))] == list(range(11, 16))
    assert await collect(postgres_table(pool, "orders", limit=0)) == []
    assert await collect(postgres_table(pool, "orders", after=ROWS)) == []
    rows = await collect(postgres_table(pool, "orders", columns=("total", "id"), limit=2))
    assert [msgspec.structs.asdict(row) for row in rows] == [{"total": o[7], "id": o[0]} for o in expected_orders()[:2]]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"table": "nope"}, NotFound),
        ({"table": 'orders" ; DROP TABLE orders; --'}, NotFound),
        ({"table": "orders", "columns": ("id", "nope")}, BadRequest),
        ({"table": "orders", "columns": ('id", pg_sleep(10) AS "x',)}, BadRequest),
        ({"table": "orders", "key": "nope"}, BadRequest),
    ],
)
async def test_names_must_be_the_tables_own(
    pool: Pool, observer: asyncpg.Connection, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await collect(postgres_table(pool, **options))
    with pytest.raises(error):
        await collect(postgres_table_csv(pool, **options))  # type: ignore[arg-type]
    await wait_released(pool, observer)
    assert await observer.fetchval("SELECT count(*) FROM orders") == ROWS


# -- CSV through COPY


async def test_csv_comes_from_copy_with_a_header(pool: Pool) -> None:
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")  # COPY ends lines with LF
    writer.writerow(COLUMNS)
    writer.writerows(expected_orders())
    body = b"".join([chunk async for chunk in postgres_table_csv(pool, "orders")])
    assert body.decode() == expected.getvalue()
    assert b'"Bolt, 10 mm"' in body  # quoted where RFC 4180 needs it

    first = b"".join([chunk async for chunk in postgres_table_csv(pool, "orders", columns=("id",), limit=3)])
    assert first == b"id\n1\n2\n3\n"


async def test_a_slow_reader_holds_copy_back_at_the_server(pool: Pool, observer: asyncpg.Connection) -> None:
    chunks = postgres_table_csv(pool, "big")
    assert (await anext(chunks)).startswith(b"id,pad\n1,")

    async def copy_waits_on_us() -> bool:
        return any(row["wait_event"] == "ClientWrite" for row in await sessions(observer))

    # The reader stopped: the bridge fills, asyncpg stops reading, and PostgreSQL blocks writing to its socket
    # with most of the 30 MB still unproduced.
    await wait_for(copy_waits_on_us, within=5)
    await chunks.aclose()
    await wait_released(pool, observer)


# -- releasing the connection


async def test_closing_early_releases_the_connection(pool: Pool, observer: asyncpg.Connection) -> None:
    rows = postgres_table(pool, "orders", fetch_size=100)
    assert len(await anext(rows)) == 100
    assert pool.get_idle_size() < pool.get_size()  # the cursor holds a connection while the stream is open
    await rows.aclose()
    assert pool.get_idle_size() == pool.get_size()  # aclose() returns once it is back
    await wait_released(pool, observer)

    chunks = postgres_table_csv(pool, "big")
    await anext(chunks)
    await chunks.aclose()
    assert pool.get_idle_size() == pool.get_size()
    await wait_released(pool, observer)


@pytest.mark.parametrize("csv_", [False, True], ids=["cursor", "copy"])
async def test_cancelling_a_source_blocked_in_the_database_releases_it(
    pool: Pool, observer: asyncpg.Connection, csv_: bool
) -> None:
    async def blocked() -> bool:
        return any(row["wait_event_type"] == "Lock" for row in await sessions(observer))

    async with observer.transaction():
        # The table is locked: the export's query waits in the server until cancelled there.
        await observer.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        async with anyio.create_task_group() as group:
            source: AsyncGenerator[Any, None] = (
                postgres_table_csv(pool, "orders") if csv_ else postgres_table(pool, "orders")
            )
            group.start_soon(anext, source)
            await wait_for(blocked, within=5)
            group.cancel_scope.cancel()
        # Released while the lock is still held: the query was cancelled in the server, not waited out.
        await wait_released(pool, observer)


async def test_a_failure_mid_stream_releases_the_connection(pool: Pool, observer: asyncpg.Connection) -> None:
    rows = postgres_table(pool, "orders", fetch_size=100)
    await anext(rows)
    pids: list[int] = []

    async def holding() -> bool:
        pids[:] = [row["pid"] for row in await sessions(observer) if row["state"] == "idle in transaction"]
        return len(pids) == 1

    await wait_for(holding, within=5)
    await observer.execute("SELECT pg_terminate_backend($1)", pids[0])
    # Which error asyncpg raises depends on how far it got with the server's goodbye and the closed socket.
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        await collect(rows)
    with pytest.raises(asyncpg.exceptions.DataError):
        await collect(postgres_table(pool, "orders", after="not a number"))
    await wait_released(pool, observer)


async def test_a_thousand_aborted_exports_leak_nothing(pool: Pool, observer: asyncpg.Connection) -> None:
    async def abort(i: int) -> None:
        source: AsyncGenerator[Any, None] = (
            postgres_table_csv(pool, "big") if i % 2 else postgres_table(pool, "orders", fetch_size=10)
        )
        if i % 4 < 2:
            await anext(source)
            await source.aclose()
        else:
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled wherever it is: acquiring, querying or copying
                await anext(source)
            await source.aclose()

    limiter = anyio.CapacityLimiter(16)  # more exports at once than the pool has connections

    async def one(i: int) -> None:
        async with limiter:
            await abort(i)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for i in range(1000):
                group.start_soon(one, i)
    await wait_released(pool, observer)
    assert pool.get_size() <= 4
    assert len(await sessions(observer)) == pool.get_size()  # no connection lives on outside the pool


# -- through the responses


async def test_a_client_leaving_a_csv_export_releases_the_connection(pool: Pool, observer: asyncpg.Connection) -> None:
    client = Client(disconnect_after=0.2, stall_after=1)
    response = ByteStream(postgres_table_csv(pool, "big"), media_type="text/csv; charset=utf-8")
    with anyio.fail_after(5):
        await response(http_scope(), client.receive, client.send)
    assert response.outcome == "client left"
    assert client.body.startswith(b"id,pad\n")
    await wait_released(pool, observer)


async def test_a_client_leaving_an_ndjson_export_releases_the_connection(
    pool: Pool, observer: asyncpg.Connection
) -> None:
    client = Client(disconnect_after=0.2, stall_after=1)
    response = RecordStream(postgres_table(pool, "orders", fetch_size=100), format="ndjson", batched=True)
    with anyio.fail_after(5):
        await response(http_scope(), client.receive, client.send)
    assert response.outcome == "client left"
    assert client.body.startswith(b'{"id":1,"customer_id":')
    await wait_released(pool, observer)
