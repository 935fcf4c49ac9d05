"""What every broker promises, checked against each of them: replay from Last-Event-ID, live follow, reset
instead of a silent gap, id validation.

The Redis broker trims exactly (``approximate=False``, ``MAXLEN =``) here, so "keeps the last N events" means the
same on both backends; approximate trimming, which keeps whole internal nodes, is tested in test_redis.py.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel
import pytest

from chute.brokers import RESET, Broker, MemoryBroker, RedisBroker
from chute.exceptions import BadRequest
from tests.brokers.conftest import REDIS_URL, assert_no_silent_gap, take, take_through


@dataclasses.dataclass
class Backend:
    make: Callable[..., Broker]  # make(max_events=...): a broker closed after the test
    zero: str  # an id older than every event: replays everything
    beyond: Callable[[str], str]  # an id newer than the given one, that no broker issued yet
    order: Callable[[str], tuple[int, ...]]  # how ids sort


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backend]:
    brokers: list[Broker] = []

    def make(max_events: int = 10_000) -> Broker:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker(max_events=max_events)
        else:
            broker = RedisBroker(REDIS_URL, prefix=redis_prefix, max_events=max_events, approximate=False)
        brokers.append(broker)
        return broker

    if request.param == "memory":
        yield Backend(make, "0", lambda id: str(int(id) + 98), lambda id: (int(id),))
    else:

        def redis_order(id: str) -> tuple[int, ...]:
            milliseconds, sequence = id.split("-")
            return int(milliseconds), int(sequence)

        yield Backend(make, "0-0", lambda id: f"{redis_order(id)[0] + 10**6}-0", redis_order)
    for broker in brokers:
        await broker.aclose()


@pytest.mark.anyio
async def test_ids_are_monotonic_per_topic(backend: Backend) -> None:
    broker = backend.make()
    ids = [await broker.publish("a", f"{i}") for i in range(5)]
    assert sorted(ids, key=backend.order) == ids
    assert len(set(ids)) == 5
    await broker.publish("b", "x")  # topics are separate logs: ids may repeat across them
    replayed = await take(broker.subscribe("a", last_event_id=backend.zero), 5)
    assert [m.id for m in replayed] == ids
    assert [m.data for m in await take(broker.subscribe("b", last_event_id=backend.zero), 1)] == ["x"]


@pytest.mark.anyio
async def test_replay_after_last_event_id_then_live(backend: Backend) -> None:
    broker = backend.make()
    ids = [await broker.publish("logs", f"line {i}", event="log") for i in range(5)]
    subscription = broker.subscribe("logs", last_event_id=ids[1])
    replayed = await take(subscription, 3)
    assert [(m.id, m.data, m.event) for m in replayed] == [
        (ids[2], "line 2", "log"),
        (ids[3], "line 3", "log"),
        (ids[4], "line 4", "log"),
    ]

    async def publish_later() -> None:
        await anyio.sleep(0.05)
        await broker.publish("logs", "live")

    async with anyio.create_task_group() as group:
        group.start_soon(publish_later)
        live = await take(subscription, 1)
    assert [(m.data, m.event) for m in live] == [("live", None)]
    assert backend.order(live[0].id) > backend.order(ids[4])
    await subscription.aclose()


@pytest.mark.anyio
async def test_data_and_event_types_come_back_unchanged(backend: Backend) -> None:
    broker = backend.make()
    sent = [("", None), ("multi\nline\r\ndata", "log"), ("ünïcødé ✓ 🚀", ""), ("x" * 100_000, "big")]
    ids = [await broker.publish("t", data, event) for data, event in sent]
    received = await take(broker.subscribe("t", last_event_id=backend.zero), len(sent))
    assert [(m.id, m.data, m.event) for m in received] == [(id, d, e) for id, (d, e) in zip(ids, sent, strict=True)]


@pytest.mark.anyio
async def test_without_an_id_only_new_events_come(backend: Backend) -> None:
    broker = backend.make()
    await broker.publish("t", "old")
    subscription = broker.subscribe("t")

    async def keep_publishing() -> None:
        # When a subscription starts is up to the broker (after a round trip to Redis, say): keep publishing
        # until it has seen two events, which must be new ones and consecutive.
        for i in itertools.count():
            await broker.publish("t", f"new {i}")
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(keep_publishing)
        received = await take(subscription, 2)
        group.cancel_scope.cancel()
    assert [m.data.split()[0] for m in received] == ["new", "new"]
    assert int(received[1].data.split()[1]) == int(received[0].data.split()[1]) + 1
    await subscription.aclose()


@pytest.mark.anyio
async def test_an_id_older_than_the_history_gets_a_reset_first(backend: Backend) -> None:
    broker = backend.make(max_events=3)
    ids = [await broker.publish("t", f"{i}") for i in range(10)]
    messages = await take(broker.subscribe("t", last_event_id=ids[1]), 4)
    assert (messages[0].id, messages[0].event) == (ids[6], RESET)
    assert [(m.id, m.data) for m in messages[1:]] == [(ids[7], "7"), (ids[8], "8"), (ids[9], "9")]


@pytest.mark.anyio
async def test_an_id_still_retained_gets_no_reset(backend: Backend) -> None:
    broker = backend.make(max_events=3)
    ids = [await broker.publish("t", f"{i}") for i in range(10)]
    # ids[6] itself is gone, but nothing after it is: the client missed nothing.
    messages = await take(broker.subscribe("t", last_event_id=ids[6]), 3)
    assert [m.id for m in messages] == ids[7:]
    assert all(m.event is None for m in messages)


@pytest.mark.anyio
async def test_zero_replays_everything_retained(backend: Backend) -> None:
    broker = backend.make()
    ids = [await broker.publish("t", f"{i}") for i in range(3)]
    assert [m.id for m in await take(broker.subscribe("t", last_event_id=backend.zero), 3)] == ids


@pytest.mark.anyio
async def test_a_subscriber_that_falls_behind_is_told_not_skipped(backend: Backend) -> None:
    broker = backend.make(max_events=2)
    first = await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id=backend.zero)
    assert [m.data for m in await take(subscription, 1)] == ["a"]
    ids = [await broker.publish("t", data) for data in "bcde"]  # while the subscriber reads nothing
    messages = await take_through(subscription, ids[-1])
    # Every event, or a reset for those it could no longer get (the Redis broker may still hold some in its
    # window of recent events, which the in-process log does not): never a silent gap.
    assert_no_silent_gap(ids, first, messages)
    assert [m.data for m in messages[-2:]] == ["d", "e"]
    await subscription.aclose()


@pytest.mark.anyio
async def test_an_id_from_an_earlier_run_gets_a_reset_then_live(backend: Backend) -> None:
    broker = backend.make()
    last = await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id=backend.beyond(last))
    assert [(m.id, m.event) for m in await take(subscription, 1)] == [(last, RESET)]
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "t", "b")
        assert [m.data for m in await take(subscription, 1)] == ["b"]
    await subscription.aclose()


@pytest.mark.anyio
async def test_an_id_for_an_empty_topic_gets_a_reset_then_live(backend: Backend) -> None:
    broker = backend.make()
    subscription = broker.subscribe("never", last_event_id=backend.beyond(backend.zero))
    assert [(m.id, m.event) for m in await take(subscription, 1)] == [(backend.zero, RESET)]
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "never", "first")
        assert [m.data for m in await take(subscription, 1)] == ["first"]
    await subscription.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "9" * 65, "١٢", "1 ", "0x10", "1\n", "\x00"])
async def test_malformed_ids_are_a_400(backend: Backend, bad: str) -> None:
    broker = backend.make()
    with pytest.raises(BadRequest):
        broker.check_id(bad)
    with pytest.raises(BadRequest):
        await take(broker.subscribe("t", last_event_id=bad), 1)


@pytest.mark.anyio
async def test_no_id_and_issued_ids_are_accepted(backend: Backend) -> None:
    broker = backend.make()
    broker.check_id(None)
    broker.check_id("")
    broker.check_id(backend.zero)
    broker.check_id(await broker.publish("t", "x"))


@pytest.mark.anyio
async def test_many_subscribers_each_get_every_event(backend: Backend) -> None:
    broker = backend.make()
    start = await broker.publish("fan", "0")
    received: list[list[str]] = [[] for _ in range(200)]

    async def listen(into: list[str]) -> None:
        # From a known id, so it does not matter whether a subscription starts before or after a publish.
        async for message in broker.subscribe("fan", last_event_id=start):
            into.append(message.data)
            if len(into) == 3:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for into in received:
                group.start_soon(listen, into)
            await anyio.sleep(0.01)
            for data in ("1", "2", "3"):
                await broker.publish("fan", data)
    assert all(into == ["1", "2", "3"] for into in received)


@pytest.mark.anyio
async def test_replay_hands_over_to_live_without_gap_or_duplicate(backend: Backend) -> None:
    broker = backend.make()
    published = [await broker.publish("t", f"old {i}") for i in range(50)]
    subscription = broker.subscribe("t", last_event_id=backend.zero)

    async def publish_meanwhile() -> None:
        for i in range(200):
            published.append(await broker.publish("t", f"new {i}"))
            if i % 20 == 0:
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(publish_meanwhile)
        messages = await take(subscription, 250, within=5)
    assert [m.id for m in messages] == published
    await subscription.aclose()


@pytest.mark.anyio
async def test_a_cancelled_subscriber_leaves_the_others_alone(backend: Backend) -> None:
    broker = backend.make()
    start = await broker.publish("t", "0")
    staying = broker.subscribe("t", last_event_id=start)

    async def leave() -> None:
        async for _ in broker.subscribe("t", last_event_id=start):
            pass

    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(leave)
            await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "t", "1")
        assert [m.data for m in await take(staying, 1)] == ["1"]
    await staying.aclose()
