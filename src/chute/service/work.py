"""The CPU-bound work behind ``/stream-batches``, importable by the worker processes."""

from __future__ import annotations

import contextlib
import os
import random

import msgspec

_encoder = msgspec.json.Encoder()

WORKER_NICENESS = 10
"""How much lower the workers' CPU priority is than the server's: on a machine with as many busy workers as cores,
the scheduler then runs the event loop as soon as it has work, and other requests stay fast while batches
compute (the workers still get every cycle the server leaves)."""


def lower_priority() -> None:
    """The pool's worker initializer: give the event loop's process precedence over batch work."""
    with contextlib.suppress(OSError):  # a platform or sandbox that refuses: the work runs all the same
        os.nice(WORKER_NICENESS)


def compute_batch(batch_num: int, batch_size: int) -> msgspec.Raw:
    """The seed's batch of ``{"id", "value"}`` results, deterministic per batch number, encoded in the worker.

    Encoding here, not in the server, keeps the CPU off the event loop and sends one bytes object back instead of
    ``batch_size`` pickled dicts.
    """
    rng = random.Random(batch_num)
    results = [{"id": rng.randint(1000, 9999), "value": rng.random() * 100} for _ in range(batch_size)]
    return msgspec.Raw(_encoder.encode(results))
