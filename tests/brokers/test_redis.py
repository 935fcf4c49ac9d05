"""What only the Redis event log does: stream ids, one log shared by several brokers (workers) that survives
their restarts, paged replay, one follower per topic whatever the number of subscribers, and failing loudly
when Redis goes away."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio

from chute.brokers import RESET, Message, RedisBroker, parse_stream_id
from chute.exceptions import BadRequest, BrokerError, ConfigurationError
from tests.brokers.conftest import REDIS_URL, assert_no_silent_gap, take, take_through
from tests.conftest import free_port

FOLLOWER_NAME = f"chute-follower-{os.getpid()}"


@pytest.fixture
async def client(anyio_backend: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def brokers(redis_prefix: str) -> AsyncIterator[list[RedisBroker]]:
    """Brokers made in a test (append them), closed after it."""
    made: list[RedisBroker] = []
    yield made
    for broker in made:
        await broker.aclose()


def make(brokers: list[RedisBroker], prefix: str, **options: Any) -> RedisBroker:
    broker = RedisBroker(REDIS_URL, prefix=prefix, **options)
    brokers.append(broker)
    return broker


async def follower_connections(client: redis.asyncio.Redis) -> int:
    return sum(1 for entry in await client.client_list() if entry.get("name") == FOLLOWER_NAME)


async def follower_count_is(client: redis.asyncio.Redis, count: int) -> bool:
    return await follower_connections(client) == count


async def wait_for(condition: Any, within: float = 2.0) -> None:
    """Poll ``condition()`` (sync or async) until it is true."""
    with anyio.fail_after(within):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


async def read_into(into: list[Message], messages: AsyncIterator[Message], within: float = 2.0) -> None:
    """Append messages until the subscription fails (or the test does, after ``within`` seconds)."""
    with anyio.fail_after(within):
        async for message in messages:
            into.append(message)


def follower_read(broker: RedisBroker, topic: str, last_id: str) -> bool:
    """Whether the broker's follower of ``topic`` has read up to ``last_id`` (white box: lets a test put a
    subscriber behind the follower's window on purpose)."""
    follower = broker._followers.get(broker.prefix + topic)
    return follower is not None and follower.last == parse_stream_id(last_id)


@pytest.mark.anyio
async def test_ids_are_stream_entry_ids(brokers: list[RedisBroker], redis_prefix: str) -> None:
    broker = make(brokers, redis_prefix)
    ids = [await broker.publish("t", f"{i}") for i in range(3)]
    assert all(re.fullmatch(r"[0-9]+-[0-9]+", id) for id in ids)
    for id in ids:
        broker.check_id(id)
    broker.check_id(f"{2**64 - 1}-{2**64 - 1}")  # the largest id a stream can hold


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        "1",
        "1-",
        "-1",
        "1-2-3",
        "1_0",
        " 1-0",
        "1-0 ",
        "1-0\n",
        "\uff11-0",  # fullwidth digit one
        "1-\u0660",  # Arabic-Indic digit zero
        "1" * 21 + "-0",
        "0-" + "1" * 21,
        f"{2**64}-0",
        f"0-{2**64}",
        "1-0" + "0" * 100,
    ],
)
async def test_ids_no_stream_issues_are_a_400(brokers: list[RedisBroker], redis_prefix: str, bad: str) -> None:
    broker = make(brokers, redis_prefix)
    with pytest.raises(BadRequest) as raised:
        broker.check_id(bad)
    assert len(raised.value.detail) < 150  # names at most 64 characters of the id
    with pytest.raises(BadRequest):
        await take(broker.subscribe("t", last_event_id=bad), 1)
    assert broker.followers == 0  # refused before anything was started


@pytest.mark.anyio
async def test_a_huge_id_is_not_echoed(brokers: list[RedisBroker], redis_prefix: str) -> None:
    with pytest.raises(BadRequest) as raised:
        make(brokers, redis_prefix).check_id("7" * 10_000)
    assert "7" * 64 in raised.value.detail
    assert "7" * 65 not in raised.value.detail


@pytest.mark.anyio
async def test_an_event_published_through_one_worker_reaches_a_subscriber_of_another(
    brokers: list[RedisBroker], redis_prefix: str
) -> None:
    worker_a = make(brokers, redis_prefix)
    worker_b = make(brokers, redis_prefix)
    start = await worker_a.publish("t", "before")
    live = worker_b.subscribe("t", last_event_id=start)
    async with anyio.create_task_group() as group:
        group.start_soon(worker_a.publish, "t", "from a", "note")
        assert [(m.data, m.event) for m in await take(live, 1)] == [("from a", "note")]
    replayed = await take(worker_b.subscribe("t", last_event_id="0-0"), 2)
    assert [m.data for m in replayed] == ["before", "from a"]
    await live.aclose()


@pytest.mark.anyio
async def test_a_client_resumes_after_its_worker_restarts(brokers: list[RedisBroker], redis_prefix: str) -> None:
    publisher = make(brokers, redis_prefix)
    first_run = RedisBroker(REDIS_URL, prefix=redis_prefix)
    ids = [await publisher.publish("t", f"{i}") for i in range(3)]
    subscription = first_run.subscribe("t", last_event_id="0-0")
    seen = await take(subscription, 2)
    await first_run.aclose()  # the worker stops: its subscription fails, the client will reconnect
    with pytest.raises(BrokerError):
        await read_into(seen, subscription)  # what it had already read from Redis, if anything, then the error
    ids += [await publisher.publish("t", f"{i}") for i in range(3, 6)]  # published while the client is away
    second_run = make(brokers, redis_prefix)
    resumed = await take_through(second_run.subscribe("t", last_event_id=seen[-1].id), ids[-1])
    assert [m.id for m in seen + resumed] == ids  # no gap, no duplicate
    assert [m.data for m in seen + resumed] == [f"{i}" for i in range(6)]


@pytest.mark.anyio
async def test_replay_reads_a_page_at_a_time(
    brokers: list[RedisBroker], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make(brokers, redis_prefix, page_size=7)
    ids = [await broker.publish("t", f"{i}") for i in range(50)]
    pages: list[int] = []
    xrange = broker._redis.xrange

    async def counting_xrange(*args: Any, **kwargs: Any) -> Any:
        entries = await xrange(*args, **kwargs)
        pages.append(len(entries or []))
        return entries

    monkeypatch.setattr(broker._redis, "xrange", counting_xrange)
    messages = await take(broker.subscribe("t", last_event_id=ids[2]), 47)
    assert [m.id for m in messages] == ids[3:]
    assert len(pages) >= 7
    assert max(pages) == 7


@pytest.mark.anyio
async def test_a_thousand_subscribers_share_one_follower(
    brokers: list[RedisBroker], redis_prefix: str, client: redis.asyncio.Redis
) -> None:
    broker = make(brokers, redis_prefix)
    start = await broker.publish("fan", "start")
    got_first = 0
    all_got_first = anyio.Event()
    received: list[list[str]] = [[] for _ in range(1_000)]

    async def listen(into: list[str]) -> None:
        nonlocal got_first
        async for message in broker.subscribe("fan", last_event_id=start):
            into.append(message.data)
            if len(into) == 1:
                got_first += 1
                if got_first == len(received):
                    all_got_first.set()
            if len(into) == 2:
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for into in received:
                group.start_soon(listen, into)
            await broker.publish("fan", "one")
            await all_got_first.wait()
            # Every subscription is live now, and all of them hang on one follower with one connection.
            assert broker.followers == 1
            assert await follower_connections(client) == 1
            await broker.publish("fan", "two")
    assert all(into == ["one", "two"] for into in received)
    assert broker.followers == 0
    await wait_for(lambda: follower_count_is(client, 0))


@pytest.mark.anyio
async def test_the_last_subscriber_leaving_stops_the_follower(
    brokers: list[RedisBroker], redis_prefix: str, client: redis.asyncio.Redis
) -> None:
    broker = make(brokers, redis_prefix)
    start = await broker.publish("t", "0")
    await broker.publish("other", "0")
    first = broker.subscribe("t", last_event_id="0-0")
    second = broker.subscribe("t", last_event_id="0-0")
    other = broker.subscribe("other", last_event_id="0-0")
    await take(first, 1)
    await take(second, 1)
    await take(other, 1)
    assert broker.followers == 2  # one per topic
    await first.aclose()
    assert broker.followers == 2
    await second.aclose()
    assert broker.followers == 1
    await wait_for(lambda: follower_count_is(client, 1))

    # A subscriber cancelled while it waits releases the follower too.
    async def wait_forever() -> None:
        async for _ in broker.subscribe("t", last_event_id=start):
            pass

    async with anyio.create_task_group() as group:
        group.start_soon(wait_forever)
        await wait_for(lambda: broker.followers == 2)
        group.cancel_scope.cancel()
    assert broker.followers == 1
    await other.aclose()
    assert broker.followers == 0
    await wait_for(lambda: follower_count_is(client, 0))


@pytest.mark.anyio
async def test_a_slow_subscriber_behind_the_window_but_retained_misses_nothing(
    brokers: list[RedisBroker], redis_prefix: str
) -> None:
    broker = make(brokers, redis_prefix, window=4)
    first = await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id="0-0")
    assert [m.id for m in await take(subscription, 1)] == [first]
    ids = [await broker.publish("t", f"{i}") for i in range(20)]
    await wait_for(lambda: follower_read(broker, "t", ids[-1]))  # the window moved on without the subscriber
    messages = await take(subscription, 20)
    assert [m.id for m in messages] == ids  # caught up from Redis, then from the window
    await subscription.aclose()


@pytest.mark.anyio
async def test_a_slow_subscriber_behind_what_redis_retains_gets_a_reset(
    brokers: list[RedisBroker], redis_prefix: str
) -> None:
    broker = make(brokers, redis_prefix, max_events=3, approximate=False)
    first = await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id="0-0")
    assert [m.id for m in await take(subscription, 1)] == [first]
    ids = [await broker.publish("t", f"{i}") for i in range(10)]
    await wait_for(lambda: follower_read(broker, "t", ids[-1]))
    messages = await take(subscription, 4)
    assert [(m.id, m.event) for m in messages] == [(ids[6], RESET), (ids[7], None), (ids[8], None), (ids[9], None)]
    assert messages[0].data == f"events after {first} up to {ids[6]} are gone"
    await subscription.aclose()


@pytest.mark.anyio
async def test_approximate_trimming_keeps_at_least_max_events(
    brokers: list[RedisBroker], redis_prefix: str, client: redis.asyncio.Redis
) -> None:
    broker = make(brokers, redis_prefix, max_events=100)
    ids = [await broker.publish("t", f"{i}") for i in range(1_000)]
    length = await client.xlen(f"{redis_prefix}t")
    assert 100 <= length < 1_000
    messages = await take_through(broker.subscribe("t", last_event_id="0-0"), ids[-1])
    assert messages[0].event == RESET
    assert len(messages) == length + 1
    assert_no_silent_gap(ids, "0-0", messages)


@pytest.mark.anyio
async def test_entries_another_writer_appended_are_delivered(
    brokers: list[RedisBroker], redis_prefix: str, client: redis.asyncio.Redis
) -> None:
    broker = make(brokers, redis_prefix)
    foreign = await client.xadd(f"{redis_prefix}t", {"data": "from elsewhere", "event": "x"})
    ours = await broker.publish("t", "ours")
    messages = await take(broker.subscribe("t", last_event_id="0-0"), 2)
    assert [(m.id, m.data, m.event) for m in messages] == [(foreign, "from elsewhere", "x"), (ours, "ours", None)]


@pytest.mark.anyio
async def test_closing_the_broker_fails_its_subscribers(brokers: list[RedisBroker], redis_prefix: str) -> None:
    broker = RedisBroker(REDIS_URL, prefix=redis_prefix)
    subscription = broker.subscribe("t")

    async def close_soon() -> None:
        await wait_for(lambda: broker.followers == 1)
        await broker.aclose()

    async with anyio.create_task_group() as group:
        group.start_soon(close_soon)
        with pytest.raises(BrokerError, match="closed"):
            await take(subscription, 1)
    with pytest.raises(BrokerError, match="closed"):
        await broker.publish("t", "x")
    with pytest.raises(BrokerError, match="closed"):
        await take(broker.subscribe("t"), 1)


@pytest.mark.parametrize("option", ["max_events", "window", "page_size", "max_connections"])
def test_options_are_checked(option: str) -> None:
    options: dict[str, Any] = {option: 0}
    with pytest.raises(ConfigurationError):
        RedisBroker(REDIS_URL, **options)


@pytest.mark.anyio
async def test_an_unreachable_redis_is_a_broker_error(anyio_backend: str) -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        with anyio.fail_after(5):
            with pytest.raises(BrokerError, match="publishing") as raised:
                await broker.publish("t", "x")
            assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)
            with pytest.raises(BrokerError):
                await take(broker.subscribe("t"), 1)
            with pytest.raises(BrokerError):
                await take(broker.subscribe("t", last_event_id="1-0"), 1)
    finally:
        await broker.aclose()


class PrivateRedis:
    """A redis-server of the test's own, which it may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    async def ready(self) -> None:
        async def answers() -> bool:
            probe = redis.asyncio.Redis.from_url(self.url)
            try:
                return bool(await probe.ping())
            except redis.exceptions.ConnectionError:
                return False
            finally:
                await probe.aclose()

        await wait_for(answers, within=5)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.mark.anyio
async def test_redis_going_away_fails_the_subscribers_and_a_reconnect_recovers(
    private_redis: PrivateRedis,
) -> None:
    await private_redis.ready()
    broker = RedisBroker(private_redis.url)
    try:
        start = await broker.publish("t", "0")
        subscription = broker.subscribe("t", last_event_id=start)
        waiting = broker.subscribe("t", last_event_id=start)
        async with anyio.create_task_group() as group:
            group.start_soon(broker.publish, "t", "1")
            assert [m.data for m in await take(subscription, 1)] == ["1"]
        private_redis.stop()
        with pytest.raises(BrokerError, match="following"):
            await take(subscription, 1, within=5)
        with pytest.raises(BrokerError):
            await take(waiting, 2, within=5)
        with pytest.raises(BrokerError, match="publishing"):
            await broker.publish("t", "lost")
        assert broker.followers == 0  # the failed follower is not counted

        private_redis.start()  # empty: the client that reconnects is told its id is not in this log
        await private_redis.ready()
        resumed = broker.subscribe("t", last_event_id=start)
        assert [m.event for m in await take(resumed, 1)] == [RESET]
        async with anyio.create_task_group() as group:
            group.start_soon(broker.publish, "t", "after")
            assert [m.data for m in await take(resumed, 1)] == ["after"]
        assert broker.followers == 1  # a fresh follower replaced the failed one
        await resumed.aclose()
    finally:
        await broker.aclose()


@pytest.mark.anyio
async def test_a_dropped_follower_connection_is_reopened_without_loss(
    brokers: list[RedisBroker], redis_prefix: str, client: redis.asyncio.Redis
) -> None:
    broker = make(brokers, redis_prefix)
    start = await broker.publish("t", "0")
    subscription = broker.subscribe("t", last_event_id=start)
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "t", "1")
        assert [m.data for m in await take(subscription, 1)] == ["1"]
    await wait_for(lambda: follower_count_is(client, 1))
    for entry in await client.client_list():
        if entry.get("name") == FOLLOWER_NAME:
            await client.client_kill_filter(_id=entry["id"])
    ids = [await broker.publish("t", f"{i}") for i in range(2, 5)]
    assert [m.id for m in await take(subscription, 3)] == ids
    await subscription.aclose()
