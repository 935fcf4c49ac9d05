"""Any iterable of records (sync or async, of records or of batches) as batches for the response to encode.

Theory of operation. A producer task drains the source into a shared list, the :class:`Batcher`; the response
(the consumer) takes the list whenever it is full, the source has ended, or the oldest record in it has waited
``max_latency``. Producer and consumer run on one event loop, so the list needs no lock: the consumer only swaps
it out while the producer is suspended.

- Async sources cost one ``append`` and one ``len`` per record: no per-record await, no per-record clock read.
  The producer suspends only when the list is full (backpressure) or inside the source itself.
- Sync sources are drained in a worker thread, many records per hop: each hop takes ``islice`` steps of 1, 2, 4,
  ... records until the batch is full or ``max_latency`` has passed, so a fast generator pays a handful of calls
  per batch. A hop blocked inside a slow source may already hold records; every ``max_latency`` the producer
  takes those over while the hop goes on, so a slow generator's records are not held back by the next one.
- When the producer is cancelled (the client left) it closes what it iterated: ``aclose()`` for async
  generators, ``close()`` (in a thread, after any running hop returns) for sync ones, so their ``finally``
  blocks and context managers release what they hold now rather than when the garbage collector runs.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import anyio.to_thread

from chute.encoders.records import Record

Source = Iterable[Any] | AsyncIterable[Any]

CLOSE_TIMEOUT = 1.0
"""Seconds a source's ``aclose()`` may take before the stream gives up waiting on it."""


class Batcher:
    """The list of records between one producer and one consumer, with backpressure and a latency deadline."""

    def __init__(self, limit: int, max_latency: float) -> None:
        # One list for the whole stream, emptied in place by take(), so producers may hold it in a local.
        self.items: list[Record] = []
        self.limit = max(1, limit)
        #: The length at which a producer must call :meth:`arrived`: 1 while the list is empty (to start the
        #: latency clock), then ``limit`` (to wait for room). One comparison per record on the hot path.
        self.threshold = 1
        self.max_latency = max_latency
        self.done = False
        self.error: Exception | None = None
        self._first_at: float | None = None
        self._wake = anyio.Event()
        self._room = anyio.Event()

    @property
    def deadline(self) -> float | None:
        return None if self._first_at is None else self._first_at + self.max_latency

    # -- producer side

    def started(self) -> None:
        """The list went from empty to non-empty: start its latency clock and let the consumer see it."""
        self._first_at = time.monotonic()
        self.threshold = self.limit
        self._wake.set()

    async def arrived(self) -> None:
        """The list reached :attr:`threshold`: start the latency clock, or wait for room when it is full."""
        if self._first_at is None:
            self.started()
        elif len(self.items) < self.limit:
            self.threshold = self.limit  # the consumer raised the limit since the clock started
        if len(self.items) >= self.limit:
            await self.full()

    async def full(self) -> None:
        """Wait until the consumer has taken the list (backpressure)."""
        while len(self.items) >= self.limit:
            self._wake.set()
            self._room = anyio.Event()
            await self._room.wait()

    def finish(self, error: Exception | None = None) -> None:
        self.done = True
        self.error = error
        self._wake.set()

    # -- consumer side

    async def take(self, deadline: float | None = None) -> list[Record]:
        """The records collected so far, once the list is full, the source ended, or a deadline passed.

        ``deadline`` is the consumer's own (its unsent bytes); the list's latency deadline counts as well.
        The returned list may be empty when only the consumer's deadline passed.
        """
        while not self.done and len(self.items) < self.limit:
            due = min((d for d in (deadline, self.deadline) if d is not None), default=math.inf)
            remaining = due - time.monotonic()
            if remaining <= 0:
                break
            self._wake = anyio.Event()
            with anyio.move_on_after(remaining):
                await self._wake.wait()
        items = self.items[:]
        self.items.clear()
        self._first_at = None
        self.threshold = 1
        self._room.set()
        return items


async def produce(source: Source, batcher: Batcher, *, batched: bool = False) -> None:
    """Drain ``source`` into ``batcher`` until it ends, fails or the task is cancelled; always close it."""
    error: Exception | None = None
    try:
        if isinstance(source, AsyncIterable):
            await _produce_async(source, batcher, batched)
        else:
            await _produce_sync(source, batcher, batched)
    except Exception as exc:  # the consumer reports it with the record index; see RecordStream
        error = exc
    finally:
        batcher.finish(error)


async def _produce_async(source: AsyncIterable[Any], batcher: Batcher, batched: bool) -> None:
    iterator = aiter(source)
    try:
        items = batcher.items
        if batched:
            async for batch in iterator:
                items.extend(batch)
                if len(items) >= batcher.threshold:
                    await batcher.arrived()
        else:
            async for record in iterator:
                items.append(record)
                if len(items) >= batcher.threshold:
                    await batcher.arrived()
    finally:
        await aclose_quietly(iterator)


async def aclose_quietly(iterator: AsyncIterator[Any]) -> None:
    """``aclose()`` an async iterator that has one, even from a cancelled task, waiting at most a second."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await aclose()


async def _produce_sync(source: Iterable[Any], batcher: Batcher, batched: bool) -> None:
    iterator = iter(source)
    try:
        while True:
            hop = _Hop()
            async with anyio.create_task_group() as group:
                group.start_soon(_run_hop, hop, iterator, batcher.limit, batcher.max_latency, batched)
                while not hop.finished.is_set():
                    with anyio.move_on_after(max(batcher.max_latency, MIN_POLL)):
                        await hop.finished.wait()
                    _deliver(batcher, hop.take())
            if hop.error is not None:
                raise hop.error
            if hop.exhausted:
                return
            if len(batcher.items) >= batcher.limit:
                await batcher.full()
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            # Shielded: the generator's finally blocks must run even though this task is being cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)


MIN_POLL = 0.001
"""Shortest interval at which records are taken over from a running hop (``max_latency`` may be zero)."""


def _deliver(batcher: Batcher, records: list[Any]) -> None:
    if records:
        was_empty = not batcher.items
        batcher.items.extend(records)
        if was_empty:
            batcher.started()


class _Hop:
    """The records one worker-thread hop has pulled so far, which the event loop may take before it returns.

    The thread only ever appends to ``records`` and the loop only reads it, remembering how many it took; under
    the GIL ``len`` and slicing see a consistent list, so neither side needs a lock.
    """

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.taken = 0
        self.finished = anyio.Event()
        self.exhausted = False
        self.error: Exception | None = None

    def take(self) -> list[Any]:
        end = len(self.records)
        records = self.records[self.taken : end]
        self.taken = end
        return records


async def _run_hop(hop: _Hop, iterator: Iterator[Any], limit: int, max_latency: float, batched: bool) -> None:
    # The error is kept rather than raised so the producer reports the source's own exception, not a group.
    try:
        hop.exhausted = await anyio.to_thread.run_sync(_pull, iterator, hop.records, limit, max_latency, batched)
    except Exception as exc:
        hop.error = exc
    finally:
        hop.finished.set()


def _pull(iterator: Iterator[Any], out: list[Any], limit: int, max_latency: float, batched: bool) -> bool:
    """Up to ``limit`` records from ``iterator`` into ``out`` within about ``max_latency``; runs in a worker thread.

    Returns whether the iterator is exhausted.
    """
    end = time.monotonic() + max_latency
    step = 1
    while len(out) < limit:
        want = step if batched else min(step, limit - len(out))
        if batched:
            got = 0
            for got, batch in enumerate(itertools.islice(iterator, want), 1):  # noqa: B007 (got is the count)
                out.extend(batch)
        else:
            before = len(out)
            # extend() stores each record as the source yields it, so the loop can take it while the next is slow.
            out.extend(itertools.islice(iterator, want))
            got = len(out) - before
        if got < want:
            return True
        if time.monotonic() >= end:
            break
        step *= 2
    return False
