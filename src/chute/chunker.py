"""Coalescing encoded output into chunks: large when the producer is fast, prompt when it is slow.

Per-chunk cost dominates a streamed response (one ASGI send per row is ~14x slower than 64 KiB chunks), so
small pieces are held until they add up to ``target`` bytes. Holding them forever would starve a slow
producer's client, so pending bytes also become due ``max_latency`` seconds after the oldest of them arrived.
The very first piece is released at once: the client learns the stream is alive (and sees a CSV header or the
first rows) without waiting for a full chunk.

The chunker is pure: it never sleeps or sends. The response asks it when the pending bytes are due and waits
for new input no longer than that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TARGET = 64 * 1024
DEFAULT_MAX_LATENCY = 0.05


class Chunker:
    def __init__(
        self,
        target: int = DEFAULT_TARGET,
        max_latency: float = DEFAULT_MAX_LATENCY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if target < 1:
            raise ValueError("target must be at least one byte")
        if max_latency < 0:
            raise ValueError("max_latency must not be negative")
        self.target = target
        self.max_latency = max_latency
        self._clock = clock
        self._pieces: list[bytes] = []
        self._size = 0
        self._since: float | None = None
        self._released_any = False

    @property
    def pending(self) -> int:
        """Bytes held back, not yet released."""
        return self._size

    @property
    def deadline(self) -> float | None:
        """Clock time at which the pending bytes are due, ``None`` when nothing is pending."""
        return None if self._since is None else self._since + self.max_latency

    def push(self, data: bytes) -> bytes | None:
        """Add ``data``; return a chunk when one is ready (target reached, first output, or due)."""
        if data:
            if self._since is None:
                self._since = self._clock()
            self._pieces.append(data)
            self._size += len(data)
        if self._size >= self.target or (self._size and not self._released_any) or self.due():
            return self.flush()
        return None

    def due(self) -> bool:
        deadline = self.deadline
        return deadline is not None and self._clock() >= deadline

    def flush(self) -> bytes:
        """Release everything pending, however little (``b""`` when nothing is)."""
        pieces = self._pieces
        chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._pieces = []
        self._size = 0
        self._since = None
        if chunk:
            self._released_any = True
        return chunk
