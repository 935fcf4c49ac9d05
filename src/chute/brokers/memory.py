"""The in-process event log: a bounded ring buffer per topic (by count and by bytes), for one worker.

Ids are decimal sequence numbers per topic, so replay is an index computation, not a scan. Subscribers wait on a
per-topic :class:`anyio.Event` that each publish sets and replaces (a broadcast without a queue per subscriber),
then read what they have not seen from the buffer: a slow subscriber costs no memory, and one that falls
further behind than the buffer reaches gets a :data:`~chute.brokers.RESET` message instead of a silent gap.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator

import anyio

from chute.brokers.base import RESET, Message, parse_sequence
from chute.exceptions import ConfigurationError


class _Log:
    def __init__(self) -> None:
        self.events: collections.deque[Message] = collections.deque()
        self.first = 1  # sequence number of events[0]
        self.last = 0  # sequence number of the newest event (0: none yet)
        self.size = 0
        self.changed = anyio.Event()


class MemoryBroker:
    """Topics of at most ``max_events`` events and ``max_bytes`` bytes of data each; older ones are dropped."""

    def __init__(self, *, max_events: int = 10_000, max_bytes: int = 8 * 1024 * 1024) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ConfigurationError("a topic must be able to hold at least one event")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._topics: dict[str, _Log] = {}

    def _log(self, topic: str) -> _Log:
        log = self._topics.get(topic)
        if log is None:
            log = self._topics[topic] = _Log()
        return log

    async def publish(self, topic: str, data: str, event: str | None = None) -> str:
        """Append an event to ``topic``; its id."""
        log = self._log(topic)
        log.last += 1
        message = Message(str(log.last), data, event)
        log.events.append(message)
        log.size += len(data)
        while len(log.events) > self.max_events or (log.size > self.max_bytes and len(log.events) > 1):
            log.size -= len(log.events.popleft().data)
            log.first += 1
        log.changed.set()
        log.changed = anyio.Event()
        return message.id

    def check_id(self, last_event_id: str | None) -> None:
        parse_sequence(last_event_id)

    async def aclose(self) -> None:
        """Nothing to release: the log lives and dies with the process."""

    async def subscribe(self, topic: str, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        """What the client missed after ``last_event_id`` (a reset first if that is no longer retained), then
        every new event as it is published. Without an id, only new events."""
        seen = parse_sequence(last_event_id)  # raises BadRequest before anything is sent
        log = self._log(topic)
        if seen is None:
            seen = log.last
        elif seen > log.last:
            # An id this log never issued yet: it came from an earlier run of the process, whose events are gone.
            yield Message(str(log.last), f"event {seen} is not in this log (the server restarted)", RESET)
            seen = log.last
        while True:
            if seen < log.first - 1:
                # Events seen+1 .. first-1 were dropped: say so, then go on from what is retained.
                yield Message(str(log.first - 1), f"events after {seen} up to {log.first - 1} are gone", RESET)
                seen = log.first - 1
            if seen < log.last:
                # The newest events sit at the right end of the deque, where indexing is cheap: a live subscriber
                # reads one or two of them, whatever the size of the buffer.
                fresh = [log.events[-i] for i in range(log.last - seen, 0, -1)]
                for message in fresh:
                    yield message
                    seen = int(message.id)
                continue
            await log.changed.wait()
