"""The CPU-bound work behind ``/stream-batches``, importable by the worker processes."""

from __future__ import annotations

import random

import msgspec

_encoder = msgspec.json.Encoder()


def compute_batch(batch_num: int, batch_size: int) -> msgspec.Raw:
    """The seed's batch of ``{"id", "value"}`` results, deterministic per batch number, encoded in the worker.

    Encoding here, not in the server, keeps the CPU off the event loop and sends one bytes object back instead of
    ``batch_size`` pickled dicts.
    """
    rng = random.Random(batch_num)
    results = [{"id": rng.randint(1000, 9999), "value": rng.random() * 100} for _ in range(batch_size)]
    return msgspec.Raw(_encoder.encode(results))
