"""The in-process event log: replay from Last-Event-ID, live follow, bounds, reset, id validation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from chute.brokers import RESET, MemoryBroker, Message
from chute.exceptions import BadRequest


async def take(messages: AsyncIterator[Message], count: int, within: float = 2.0) -> list[Message]:
    taken: list[Message] = []
    with anyio.fail_after(within):
        async for message in messages:
            taken.append(message)
            if len(taken) == count:
                break
    return taken


@pytest.mark.anyio
async def test_ids_are_monotonic_per_topic() -> None:
    broker = MemoryBroker()
    ids = [await broker.publish("a", f"{i}") for i in range(3)]
    assert ids == ["1", "2", "3"]
    assert await broker.publish("b", "x") == "1"


@pytest.mark.anyio
async def test_replay_after_last_event_id_then_live() -> None:
    broker = MemoryBroker()
    for i in range(5):
        await broker.publish("logs", f"line {i}", event="log")
    subscription = broker.subscribe("logs", last_event_id="2")
    replayed = await take(subscription, 3)
    assert [(m.id, m.data, m.event) for m in replayed] == [
        ("3", "line 2", "log"),
        ("4", "line 3", "log"),
        ("5", "line 4", "log"),
    ]

    async def publish_later() -> None:
        await anyio.sleep(0.05)
        await broker.publish("logs", "live")

    async with anyio.create_task_group() as group:
        group.start_soon(publish_later)
        live = await take(subscription, 1)
    assert [(m.id, m.data) for m in live] == [("6", "live")]
    await subscription.aclose()


@pytest.mark.anyio
async def test_without_an_id_only_new_events_come() -> None:
    broker = MemoryBroker()
    await broker.publish("t", "old")
    subscription = broker.subscribe("t")
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "t", "new")
        assert [m.data for m in await take(subscription, 1)] == ["new"]


@pytest.mark.anyio
async def test_an_id_older_than_the_history_gets_a_reset_first() -> None:
    broker = MemoryBroker(max_events=3)
    for i in range(10):
        await broker.publish("t", f"{i}")
    messages = await take(broker.subscribe("t", last_event_id="2"), 4)
    assert messages[0].event == RESET
    assert messages[0].id == "7"
    assert [m.id for m in messages[1:]] == ["8", "9", "10"]


@pytest.mark.anyio
async def test_the_byte_bound_drops_old_events_but_keeps_the_newest() -> None:
    broker = MemoryBroker(max_bytes=10)
    for i in range(5):
        await broker.publish("t", "x" * 4 + str(i))
    messages = await take(broker.subscribe("t", last_event_id="0"), 3)
    assert messages[0].event == RESET
    assert [m.data for m in messages[1:]] == ["xxxx3", "xxxx4"]
    await broker.publish("t", "y" * 100)  # larger than the bound: still kept, alone
    assert [m.data for m in await take(broker.subscribe("t", last_event_id="5"), 1)] == ["y" * 100]


@pytest.mark.anyio
async def test_a_subscriber_that_falls_behind_is_told_not_skipped() -> None:
    broker = MemoryBroker(max_events=2)
    await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id="0")
    assert [m.data for m in await take(subscription, 1)] == ["a"]
    for data in "bcde":
        await broker.publish("t", data)
    messages = await take(subscription, 3)
    assert messages[0].event == RESET
    assert [m.data for m in messages[1:]] == ["d", "e"]


@pytest.mark.anyio
async def test_an_id_from_an_earlier_run_gets_a_reset_then_live() -> None:
    broker = MemoryBroker()
    await broker.publish("t", "a")
    subscription = broker.subscribe("t", last_event_id="99")
    assert [(m.id, m.event) for m in await take(subscription, 1)] == [("1", RESET)]
    async with anyio.create_task_group() as group:
        group.start_soon(broker.publish, "t", "b")
        assert [m.data for m in await take(subscription, 1)] == ["b"]


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "9" * 65, "١٢", "1 ", "0x10"])
async def test_malformed_ids_are_a_400(bad: str) -> None:
    with pytest.raises(BadRequest):
        await take(MemoryBroker().subscribe("t", last_event_id=bad), 1)


@pytest.mark.anyio
async def test_many_subscribers_each_get_every_event() -> None:
    broker = MemoryBroker()
    received: list[list[str]] = [[] for _ in range(200)]

    async def listen(into: list[str]) -> None:
        async for message in broker.subscribe("fan"):
            into.append(message.data)
            if len(into) == 3:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for into in received:
                group.start_soon(listen, into)
            await anyio.sleep(0.05)
            for data in ("1", "2", "3"):
                await broker.publish("fan", data)
    assert all(into == ["1", "2", "3"] for into in received)
