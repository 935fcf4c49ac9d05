import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from chute.sources import iterables
from chute.sources.iterables import Batcher, Source, produce

pytestmark = pytest.mark.anyio


async def drain(
    source: Source, *, limit: int = 64, max_latency: float = 0.05, batched: bool = False
) -> tuple[list[Any], Batcher]:
    """Everything ``produce`` hands over, taken as a consumer would take it."""
    batcher = Batcher(limit, max_latency)
    records: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(produce, source, batcher, batched=batched))
        while True:
            records.extend(await batcher.take())
            if batcher.done and not batcher.items:
                break
    return records, batcher


async def test_sync_generator_runs_in_a_worker_thread() -> None:
    threads: set[int] = set()

    def source() -> Iterator[int]:
        for i in range(1000):
            threads.add(threading.get_ident())
            yield i

    records, batcher = await drain(source())
    assert records == list(range(1000))
    assert batcher.error is None
    assert threads
    assert threading.get_ident() not in threads


async def test_fast_sync_generator_takes_few_thread_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    hops = 0
    pull = iterables._pull

    def counting_pull(*args: Any) -> bool:
        nonlocal hops
        hops += 1
        return pull(*args)

    monkeypatch.setattr(iterables, "_pull", counting_pull)
    records, _ = await drain(iter(range(100_000)), limit=1024)
    assert records == list(range(100_000))
    assert hops <= 100_000 // 1024 * 2 + 10


async def test_slow_sync_generator_hands_over_each_record_promptly() -> None:
    yielded: dict[int, float] = {}

    def source() -> Iterator[int]:
        for i in range(4):
            yielded[i] = time.monotonic()
            yield i
            # The next record is slow: the ones already pulled must not wait for it.
            time.sleep(0.3)

    batcher = Batcher(64, 0.05)
    received: dict[int, float] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(produce, source(), batcher)
        while not (batcher.done and not batcher.items):
            for record in await batcher.take():
                received[record] = time.monotonic()
    assert sorted(received) == [0, 1, 2, 3]
    delays = [received[i] - yielded[i] for i in range(4)]
    assert max(delays) < 0.2, delays


async def test_async_generator_is_consumed_record_by_record_on_the_loop() -> None:
    threads: set[int] = set()

    async def source() -> AsyncIterator[list[int]]:
        for i in range(5):
            threads.add(threading.get_ident())
            yield [i, i]

    records, _ = await drain(source())
    assert records == [[i, i] for i in range(5)]
    assert threads == {threading.get_ident()}


async def test_slow_async_generator_hands_over_each_record_promptly() -> None:
    async def source() -> AsyncIterator[float]:
        for _ in range(3):
            await anyio.sleep(0.2)
            yield time.monotonic()

    batcher = Batcher(64, 0.05)
    delays: list[float] = []
    async with anyio.create_task_group() as group:
        group.start_soon(produce, source(), batcher)
        while not (batcher.done and not batcher.items):
            delays.extend(time.monotonic() - at for at in await batcher.take())
    assert len(delays) == 3
    assert max(delays) < 0.15, delays


def sync_batches() -> Iterator[list[int]]:
    yield [0, 1, 2]
    yield []
    yield [3]
    yield list(range(4, 200))


async def async_batches() -> AsyncIterator[list[int]]:
    for batch in sync_batches():
        yield batch


@pytest.mark.parametrize("source", [sync_batches, async_batches])
async def test_batched_sources_are_flattened(source: Any) -> None:
    records, _ = await drain(source(), limit=16, batched=True)
    assert records == list(range(200))


async def test_limit_bounds_what_the_consumer_is_handed() -> None:
    batcher = Batcher(10, 60.0)
    sizes: list[int] = []
    async with anyio.create_task_group() as group:
        group.start_soon(produce, iter(range(95)), batcher)
        while not (batcher.done and not batcher.items):
            sizes.append(len(await batcher.take()))
    assert sum(sizes) == 95
    # Sync hops may hand over a little past the limit, never unboundedly.
    assert max(sizes) <= 20


class Boom(Exception):
    pass


def failing_sync() -> Iterator[int]:
    yield 1
    yield 2
    raise Boom("source failed")


async def failing_async() -> AsyncIterator[int]:
    yield 1
    yield 2
    raise Boom("source failed")


@pytest.mark.parametrize("source", [failing_sync, failing_async])
async def test_errors_are_recorded_after_the_records_before_them(source: Any) -> None:
    records, batcher = await drain(source())
    assert records == [1, 2]
    assert batcher.done
    # The source's own exception, not a wrapper: the response reports it as it was raised.
    assert type(batcher.error) is Boom
    assert str(batcher.error) == "source failed"


async def test_a_non_iterable_source_is_an_error_too() -> None:
    records, batcher = await drain(42)  # type: ignore[arg-type]
    assert records == []
    assert isinstance(batcher.error, TypeError)


class Watched:
    """Flags the states of a source a test waits for or checks."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.closed = threading.Event()


async def cancel_when(watched: Watched, source: Source, *, limit: int = 10) -> float:
    """Run ``produce`` until the source has started, cancel it, and return how long cancelling took."""
    batcher = Batcher(limit, 0.05)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(produce, source, batcher)
            await anyio.to_thread.run_sync(watched.started.wait)
            await anyio.sleep(0.05)
            began = time.monotonic()
            group.cancel_scope.cancel()
    return time.monotonic() - began


async def test_cancelling_closes_an_async_generator_suspended_inside_it() -> None:
    watched = Watched()

    async def source() -> AsyncIterator[int]:
        try:
            yield 1
            watched.started.set()
            await anyio.sleep(3600)
            yield 2
        finally:
            watched.closed.set()

    assert await cancel_when(watched, source()) < 1
    assert watched.closed.is_set()


async def test_cancelling_closes_an_async_generator_waiting_for_room() -> None:
    watched = Watched()

    async def source() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                if i == 9:
                    watched.started.set()
                yield i
                i += 1
        finally:
            watched.closed.set()

    assert await cancel_when(watched, source(), limit=10) < 1
    assert watched.closed.is_set()


async def test_cancelling_closes_a_sync_generator_waiting_for_room() -> None:
    watched = Watched()

    def source() -> Generator[int]:
        try:
            i = 0
            while True:
                if i == 9:
                    watched.started.set()
                yield i
                i += 1
        finally:
            watched.closed.set()

    generator = source()
    assert await cancel_when(watched, generator, limit=10) < 1
    assert watched.closed.is_set()
    assert inspect.getgeneratorstate(generator) == inspect.GEN_CLOSED


async def test_cancelling_closes_a_sync_generator_blocked_inside_it() -> None:
    watched = Watched()

    def source() -> Generator[int]:
        try:
            i = 0
            while True:
                watched.started.set()
                time.sleep(0.2)
                yield i
                i += 1
        finally:
            watched.closed.set()

    generator = source()
    # A thread cannot be interrupted: cancelling waits for the running hop, which ends with its next record.
    assert await cancel_when(watched, generator, limit=1000) < 1.5
    assert watched.closed.is_set()
    assert inspect.getgeneratorstate(generator) == inspect.GEN_CLOSED


async def test_finished_sources_are_closed() -> None:
    closed: list[str] = []

    class Closing(Iterable[int]):
        def __iter__(self) -> Iterator[int]:
            return self

        def __next__(self) -> int:
            raise StopIteration

        def close(self) -> None:
            closed.append("sync")

    await drain(Closing())
    assert closed == ["sync"]


async def test_take_returns_when_the_consumer_deadline_passes() -> None:
    batcher = Batcher(10, 0.05)
    began = time.monotonic()
    assert await batcher.take(time.monotonic() + 0.1) == []
    assert 0.09 < time.monotonic() - began < 1


async def test_full_waits_for_the_consumer() -> None:
    batcher = Batcher(2, 0.05)
    batcher.items.extend([1, 2])
    batcher.started()
    waited = anyio.Event()

    async def producer() -> None:
        await batcher.full()
        waited.set()

    async with anyio.create_task_group() as group:
        group.start_soon(producer)
        await anyio.sleep(0.05)
        assert not waited.is_set()
        assert await batcher.take() == [1, 2]
        await anyio.sleep(0.01)
        assert waited.is_set()
