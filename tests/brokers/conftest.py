"""What the broker tests share: reading a bounded number of messages, and throwaway Redis keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
import redis.asyncio

from chute.brokers import RESET, Message

REDIS_URL = "redis://127.0.0.1:6379/0"  # scripts/services starts it when it is not running


async def take(messages: AsyncIterator[Message], count: int, within: float = 2.0) -> list[Message]:
    """The next ``count`` messages; fails the test after ``within`` seconds instead of hanging."""
    taken: list[Message] = []
    with anyio.fail_after(within):
        async for message in messages:
            taken.append(message)
            if len(taken) == count:
                break
    return taken


async def take_through(messages: AsyncIterator[Message], last_id: str, within: float = 2.0) -> list[Message]:
    """Messages up to and including the one with id ``last_id`` (a reset with that id counts)."""
    taken: list[Message] = []
    with anyio.fail_after(within):
        async for message in messages:
            taken.append(message)
            if message.id == last_id:
                break
    return taken


def assert_no_silent_gap(published: Sequence[str], after: str, messages: Sequence[Message]) -> None:
    """``messages`` are the events ``published`` after id ``after``, in order, without duplicates, except that a
    reset may stand for a run of missed ones: its id is then the last missed event's."""
    expected = list(published[published.index(after) + 1 :] if after in published else published)
    for message in messages:
        assert expected, f"{message} came after the last event"
        if message.event == RESET:
            assert message.id in expected, f"{message} does not name a missed event"
            del expected[: expected.index(message.id) + 1]
        else:
            assert message.id == expected.pop(0), f"{message} is not the next event"
    assert expected == [], f"events {expected} never came"


@pytest.fixture
async def redis_prefix(anyio_backend: str) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"chute:test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
