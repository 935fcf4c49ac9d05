"""The shared event log: one Redis stream per topic, so every worker on every host sees the same events.

Ids are Redis stream entry ids (``<milliseconds>-<sequence>``), monotonic per stream and the same whichever worker
a client reconnects to, so ``Last-Event-ID`` survives worker restarts. Publishing appends with ``XADD`` under a
``MAXLEN`` cap; a replay is ``XRANGE`` from an exclusive start, read a page at a time so a client that is far
behind never makes the worker load the whole stream.

Knowing that events were lost needs the id of the newest event trimmed away, and Redis does not keep it: XINFO's
``max-deleted-entry-id`` moves on ``XDEL`` only, never on ``MAXLEN`` trimming (checked on Redis 7.0). So each
entry carries the id of the entry before it (``prev``), written by a small Lua script that reads the newest id
and appends in one atomic step. A subscriber at ``p`` that reads an entry whose ``prev`` is newer than ``p`` knows
that the events after ``p`` up to ``prev`` are gone, and says so with a :data:`~chute.brokers.RESET` message
whose id is exactly that ``prev``; when ``prev`` equals ``p`` nothing is missing, whatever the trimming did.

Live fan-out must cost nothing per subscriber on the Redis side, since one worker holds thousands of idle
streams: per topic, one follower task blocks on ``XREAD`` over its own connection and appends what it reads to a
short window of recent entries, then wakes every subscriber through a broadcast :class:`anyio.Event` it sets and
replaces (the trick of :mod:`chute.brokers.memory`). A subscriber reads from the window what is newer than its
position; one whose position is older than the window's start (a replay, or a slow reader) reads from Redis
instead until it reaches the window. The follower starts with the topic's first subscriber and stops with its
last, so quiet topics hold neither a task nor a connection. A follower that cannot reach Redis fails its
subscribers with :class:`~chute.exceptions.BrokerError`: their streams are aborted and clients reconnect with
``Last-Event-ID``, losing nothing.

This module needs an asyncio event loop (the follower is an asyncio task) and Redis 6.2 or newer (exclusive
``XRANGE`` starts, ``MAXLEN =``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import anyio
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from chute.brokers.base import MAX_ID_LENGTH, RESET, Message
from chute.exceptions import BadRequest, BrokerError, ConfigurationError

_Id = tuple[int, int]
_ZERO: _Id = (0, 0)
_MAX_PART = 2**64 - 1  # each half of a stream id is an unsigned 64-bit integer
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # [0-9], not \d: Unicode digits are not ids

_COMMAND_TIMEOUT = 10.0  # seconds a command may take, waiting for a pooled connection included
_BLOCK_MS = 5_000  # an idle follower re-issues its XREAD this often, so a connection silent for longer is dead
# One retry heals a pooled connection that Redis closed while idle; more would only delay the error a client
# needs to reconnect elsewhere. A retried XADD whose reply was lost may append the event twice (at-least-once).
_RETRY = Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), retries=1)

# Appends an entry that carries the id of the newest entry before it, in one atomic step (see the module
# docstring). ARGV: trimming ("~" or "="), max_events, data, then the event type when there is one.
_APPEND = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if newest[1] then prev = newest[1][1] end
if ARGV[4] then
    return redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], '*', 'data', ARGV[3], 'prev', prev,
        'event', ARGV[4])
end
return redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], '*', 'data', ARGV[3], 'prev', prev)
"""


def parse_stream_id(last_event_id: str | None) -> _Id | None:
    """The ``(milliseconds, sequence)`` of a ``Last-Event-ID`` issued by :class:`RedisBroker`; ``None`` when
    absent or empty (start live); :class:`~chute.exceptions.BadRequest` when no Redis stream could issue it."""
    if last_event_id is None or last_event_id == "":
        return None
    match = _ID.fullmatch(last_event_id) if len(last_event_id) <= MAX_ID_LENGTH else None
    if match is None or int(match[1]) > _MAX_PART or int(match[2]) > _MAX_PART:
        raise BadRequest(f"Last-Event-ID {last_event_id[:MAX_ID_LENGTH]!r} is not an id this server issued")
    return int(match[1]), int(match[2])


def _format(stream_id: _Id) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def _parse(stream_id: object) -> _Id:
    milliseconds, _, sequence = str(stream_id).partition("-")
    return int(milliseconds), int(sequence)


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    key: _Id
    prev: _Id | None  # None for an entry that some other writer appended without one: no gap is known
    message: Message


def _entries(raw: Iterable[Any]) -> list[_Entry]:
    """Entries from an XRANGE or XREAD reply (``[(id, {field: value})]``, decoded)."""
    entries = []
    for stream_id, fields in raw:
        fields = fields or {}
        prev = fields.get("prev")
        entries.append(
            _Entry(
                _parse(stream_id),
                _parse(prev) if isinstance(prev, str) and _ID.fullmatch(prev) else None,
                Message(str(stream_id), str(fields.get("data", "")), fields.get("event")),
            )
        )
    return entries


def _deliver(position: _Id, entries: Iterable[_Entry]) -> tuple[list[Message], _Id]:
    """The messages a subscriber at ``position`` gets from ``entries`` (oldest first), a reset before any gap,
    and its position after them. Entries it already has are skipped, so overlapping reads never duplicate."""
    messages = []
    for entry in entries:
        if entry.key <= position:
            continue
        if entry.prev is not None and entry.prev > position:
            gone = f"events after {_format(position)} up to {_format(entry.prev)} are gone"
            messages.append(Message(_format(entry.prev), gone, RESET))
        messages.append(entry.message)
        position = entry.key
    return messages, position


class _Follower:
    """The one reader of a topic's stream in this broker, and the window of what it read last."""

    def __init__(self, key: str, start: _Id, capacity: int) -> None:
        self.key = key
        self.capacity = capacity
        # The window holds every entry after ``base`` up to ``last`` that Redis still had when the follower read
        # it; an entry trimmed before that shows as a ``prev`` newer than its predecessor in the window.
        self.window: collections.deque[_Entry] = collections.deque()
        self.base = start
        self.last = start
        self.changed = anyio.Event()
        self.error: BrokerError | None = None
        self.subscribers = 0
        self.task: asyncio.Task[None] | None = None

    def extend(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if len(self.window) == self.capacity:
                self.base = self.window.popleft().key
            self.window.append(entry)
            self.last = entry.key
        self.wake()

    def fail(self, error: BrokerError) -> None:
        if self.error is None:
            self.error = error
        self.wake()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def newer_than(self, position: _Id) -> list[_Entry]:
        # The newest entries sit at the right end of the deque, where indexing is cheap: a live subscriber reads
        # one or two of them, whatever the size of the window. This runs once per subscriber per event, so the
        # common case (exactly the newest entry is new) is answered before the general loop.
        window = self.window
        if not window or window[-1].key <= position:
            return []
        if len(window) == 1 or window[-2].key <= position:
            return [window[-1]]
        count = 2
        while count < len(window) and window[-1 - count].key > position:
            count += 1
        return [window[-i] for i in range(count, 0, -1)]


class RedisBroker:
    """Topics kept as Redis streams named ``prefix + topic``, each capped at about ``max_events`` entries.

    ``approximate`` trims with ``MAXLEN ~`` (Redis drops whole internal nodes, so a stream keeps at least
    ``max_events`` entries and trimming is cheap); ``False`` trims to exactly ``max_events`` (``MAXLEN =``),
    slower on large streams. ``window`` is how many recent events each followed topic keeps in memory for live
    subscribers (never more than ``max_events``), ``page_size`` how many entries a replay reads per round trip,
    ``max_connections`` the size of the pool for publishing and replays (followers have their own connection).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "chute:events:",
        max_events: int = 10_000,
        approximate: bool = True,
        window: int = 1_000,
        page_size: int = 500,
        max_connections: int = 64,
    ) -> None:
        if max_events < 1 or window < 1 or page_size < 1 or max_connections < 1:
            raise ConfigurationError("max_events, window, page_size and max_connections must be at least 1")
        self.url = url
        self.prefix = prefix
        self.max_events = max_events
        self.approximate = approximate
        # Never more than Redis keeps: "retained" then means the same whether a subscriber reads from memory or
        # from Redis, so how far behind a reader may fall before it gets a reset does not depend on the path.
        self.window = min(window, max_events)
        self.page_size = page_size
        # Bounded, so thousands of subscribers arriving at once queue for a connection instead of opening
        # thousands; no socket_timeout and no pool timeout, as _redis_errors bounds every call (see there).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            socket_timeout=None,
            decode_responses=True,
            retry=_RETRY,
        )
        self._redis = redis.asyncio.Redis.from_pool(pool)
        self._append = self._redis.register_script(_APPEND)
        self._followers: dict[str, _Follower] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # followers still running, stopping ones included
        self._closed = False

    @property
    def followers(self) -> int:
        """How many topics this broker follows now (one task and one Redis connection each)."""
        return sum(1 for follower in self._followers.values() if follower.error is None)

    @contextlib.asynccontextmanager
    async def _redis_errors(self, doing: str, within: float = _COMMAND_TIMEOUT) -> AsyncIterator[None]:
        """Bound a Redis call in time and turn its failures into :class:`~chute.exceptions.BrokerError`.

        The deadline is enforced here rather than with redis-py's ``socket_timeout``, which wraps every send in
        :func:`asyncio.wait_for`: on Python 3.11 that swallows a cancellation arriving as the send completes, so
        a follower being stopped would go on to block in ``XREAD``.
        """
        if self._closed:
            raise BrokerError(f"{doing}: the broker is closed")
        try:
            async with asyncio.timeout(within):
                yield
        except TimeoutError as error:
            raise BrokerError(f"{doing}: Redis did not answer within {within:g} s") from error
        except redis.exceptions.RedisError as error:
            raise BrokerError(f"{doing}: {error}") from error

    async def publish(self, topic: str, data: str, event: str | None = None) -> str:
        """Append an event to ``topic``; its id."""
        args: list[str | int] = ["~" if self.approximate else "=", self.max_events, data]
        if event is not None:
            args.append(event)
        async with self._redis_errors(f"publishing to {topic!r}"):
            stream_id = await self._append(keys=[self.prefix + topic], args=args)
        return str(stream_id)

    def check_id(self, last_event_id: str | None) -> None:
        parse_stream_id(last_event_id)

    async def aclose(self) -> None:
        """Stop every follower (their subscribers get :class:`~chute.exceptions.BrokerError`), close the pool."""
        self._closed = True
        for follower in self._followers.values():
            follower.fail(BrokerError(f"following {follower.key!r}: the broker was closed"))
            if follower.task is not None:
                follower.task.cancel()
        self._followers.clear()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._redis.aclose()

    async def subscribe(self, topic: str, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        """What the client missed after ``last_event_id`` (a reset first if that is no longer retained), then
        every new event as it is published, by any broker on the same Redis. Without an id, only new events."""
        wanted = parse_stream_id(last_event_id)  # raises BadRequest before anything is sent
        key = self.prefix + topic
        now = await self._last_generated(key)
        follower = self._acquire(key, now)
        try:
            if wanted is None:
                position = now
            elif wanted > now:
                # An id this stream has not issued: the stream was deleted since, or the id is from another log.
                yield Message(_format(now), f"event {last_event_id} is not in this log", RESET)
                position = now
            else:
                position = wanted
            while True:
                if follower.error is not None:
                    raise BrokerError(str(follower.error)) from follower.error
                if position < follower.base:
                    # Behind the window (a replay, or a slow reader): read from Redis until caught up with it.
                    entries = await self._range(key, position)
                    if entries:
                        messages, position = _deliver(position, entries)
                    else:
                        # Nothing after us in Redis, yet the follower read newer entries: the stream was deleted.
                        gone = f"events after {_format(position)} up to {_format(follower.base)} are gone"
                        messages, position = [Message(_format(follower.base), gone, RESET)], follower.base
                else:
                    fresh = follower.newer_than(position)
                    if not fresh:
                        await follower.changed.wait()
                        continue
                    messages, position = _deliver(position, fresh)
                for message in messages:
                    yield message
        finally:
            self._release(follower)  # synchronous: runs even when the generator is closed by a cancellation

    async def _last_generated(self, key: str) -> _Id:
        """The id of the newest entry ``key`` ever had (the start of "live"); (0, 0) when there is no stream."""
        async with self._redis_errors(f"reading {key!r}"):
            try:
                info = await self._redis.xinfo_stream(key)
            except redis.exceptions.ResponseError as error:
                if "no such key" in str(error).lower():
                    return _ZERO
                raise
        return _parse(info["last-generated-id"])

    async def _range(self, key: str, position: _Id) -> list[_Entry]:
        """One page of the entries after ``position``."""
        async with self._redis_errors(f"replaying {key!r}"):
            raw = await self._redis.xrange(key, f"({_format(position)}", "+", count=self.page_size)
        return _entries(raw or [])

    def _acquire(self, key: str, start: _Id) -> _Follower:
        if self._closed:
            raise BrokerError(f"following {key!r}: the broker is closed")
        follower = self._followers.get(key)
        if follower is None or follower.error is not None:
            # A failed follower is replaced, not reused: the client that reconnects after the failure gets a
            # fresh attempt at Redis, while the subscribers of the failed one still see its error.
            follower = self._followers[key] = _Follower(key, start, self.window)
            follower.task = asyncio.create_task(self._follow(follower), name=f"chute follower {key}")
            self._tasks.add(follower.task)
            follower.task.add_done_callback(self._tasks.discard)
        follower.subscribers += 1
        return follower

    def _release(self, follower: _Follower) -> None:
        follower.subscribers -= 1
        if follower.subscribers == 0:
            if self._followers.get(follower.key) is follower:
                del self._followers[follower.key]
            if follower.task is not None:
                follower.task.cancel()  # the task closes its connection on the way out; aclose() awaits it

    async def _follow(self, follower: _Follower) -> None:
        # Its own connection: a blocking XREAD holds the connection it runs on for up to _BLOCK_MS.
        client = redis.asyncio.Redis.from_url(
            self.url,
            decode_responses=True,
            single_connection_client=True,
            socket_timeout=None,
            retry=_RETRY,
            client_name=f"chute-follower-{os.getpid()}",  # tells operators what the connection is in CLIENT LIST
        )
        try:
            while True:
                async with self._redis_errors(f"following {follower.key!r}", _BLOCK_MS / 1000 + _COMMAND_TIMEOUT):
                    reply = await client.xread(
                        {follower.key: _format(follower.last)}, count=self.window, block=_BLOCK_MS
                    )
                streams = reply.values() if isinstance(reply, dict) else [stream[1] for stream in reply or []]
                entries = [entry for stream in streams for entry in _entries(stream)]
                if entries:
                    follower.extend(entries)
        except BrokerError as error:
            follower.fail(error)
        except Exception as error:  # a bug must not leave subscribers waiting forever: fail them loudly
            failure = BrokerError(f"following {follower.key!r}: {error!r}")
            failure.__cause__ = error
            follower.fail(failure)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
