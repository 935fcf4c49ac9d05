"""CPU work in a process pool: results in order, a bound on jobs in flight, pending jobs cancelled on close."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from chute.sources.batches import ordered_map


def square_after(delay: float, value: int) -> int:
    time.sleep(delay)
    return value * value


class CountingPool(concurrent.futures.ThreadPoolExecutor):
    """A pool that records how many jobs were submitted (threads suffice to observe the scheduling)."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.submitted = 0
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self.lock:
            self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.anyio
async def test_results_come_in_job_order_even_when_later_jobs_finish_first() -> None:
    with CountingPool(4) as pool:
        jobs = [(0.2, 1), (0.0, 2), (0.1, 3), (0.0, 4)]
        results = [value async for value in ordered_map(pool, square_after, jobs, in_flight=4)]
    assert results == [1, 4, 9, 16]


@pytest.mark.anyio
async def test_no_more_than_in_flight_jobs_run_ahead_of_the_consumer() -> None:
    with CountingPool(2) as pool:
        results = ordered_map(pool, square_after, ((0.0, i) for i in range(100)), in_flight=3)
        assert await anext(results) == 0
        assert pool.submitted == 3
        await results.aclose()


@pytest.mark.anyio
async def test_closing_cancels_jobs_not_yet_started() -> None:
    with CountingPool(1) as pool:
        results = ordered_map(pool, square_after, ((0.3, i) for i in range(10)), in_flight=5)
        assert await anext(results) == 0
        await results.aclose()
        started = time.monotonic()
    # Shutting the pool down waited for at most the one running job, not the four queued behind it.
    assert time.monotonic() - started < 0.5
