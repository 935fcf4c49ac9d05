"""What only the in-process event log does: decimal ids numbered per topic, and a bound on bytes as well as on
events. What every broker does is in test_contract.py."""

from __future__ import annotations

import pytest

from chute.brokers import RESET, MemoryBroker
from chute.exceptions import BadRequest, ConfigurationError
from tests.brokers.conftest import take


@pytest.mark.anyio
async def test_ids_are_decimal_sequence_numbers_per_topic() -> None:
    broker = MemoryBroker()
    ids = [await broker.publish("a", f"{i}") for i in range(3)]
    assert ids == ["1", "2", "3"]
    assert await broker.publish("b", "x") == "1"


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
@pytest.mark.parametrize("redis_id", ["1732460000000-0", "0-0"])
async def test_a_redis_id_is_not_one_of_ours(redis_id: str) -> None:
    with pytest.raises(BadRequest):
        MemoryBroker().check_id(redis_id)


def test_a_log_must_hold_an_event() -> None:
    with pytest.raises(ConfigurationError):
        MemoryBroker(max_events=0)
    with pytest.raises(ConfigurationError):
        MemoryBroker(max_bytes=0)
