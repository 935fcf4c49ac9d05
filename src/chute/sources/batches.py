"""CPU-bound work off the event loop: jobs run in a process pool, results come back in order.

Threads would not do: pure-Python work holds the GIL and starves the event loop (and so every other request).
At most ``in_flight`` jobs are submitted ahead of the consumer, so a slow client slows the pool instead of
piling up results in memory. When the consumer stops (the client left), jobs not yet started are cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def ordered_map(
    pool: concurrent.futures.Executor,
    function: Callable[..., T],
    jobs: Iterable[tuple[Any, ...]],
    *,
    in_flight: int,
) -> AsyncGenerator[T, None]:
    """``function(*job)`` for each job, computed in ``pool``, yielded in job order as each completes."""
    pending: collections.deque[concurrent.futures.Future[T]] = collections.deque()
    try:
        for job in jobs:
            pending.append(pool.submit(function, *job))
            if len(pending) >= in_flight:
                yield await asyncio.wrap_future(pending.popleft())
        while pending:
            yield await asyncio.wrap_future(pending.popleft())
    finally:
        # Cancel the pool's own futures, synchronously: cancelling asyncio wrappers would reach them only on a
        # later turn of the event loop, after a caller may already be shutting the pool down.
        for future in pending:
            future.cancel()
