"""The service's own log as a live feed: log records and finished requests, published to the event log.

Log records may come from any thread (worker threads log too), and a logging handler must never block or await.
:class:`LogFeed` turns each record into a small JSON document and hands it to the event loop with
``call_soon_threadsafe``; one task publishes them in order. The queue is bounded: when the broker cannot keep up,
records are dropped and counted rather than held, and the next published record says how many went missing.
Records of the broker's own libraries are left out, so a failing broker cannot feed on its own errors.

:class:`AccessLog` is the request half: a pure ASGI middleware that logs each finished request once, with its
status, body bytes and duration (uvicorn's access line is written when the headers leave, before a stream's
body, so it knows neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import os
import time
from typing import Any

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chute.brokers import Broker
from chute.exceptions import ChuteError
from chute.feeds import EXTENSION as FEED_EXTENSION

LOG_TOPIC = "service.logs"
"""Topic of the log feed; ``/stream-logs`` follows it, and clients may not publish to it."""

ACCESS_LOGGER = "chute.access"
_SKIPPED = ("redis", "asyncio", "chute.service.logfeed")
_encode = msgspec.json.Encoder().encode


class LogFeed(logging.Handler):
    """A logging handler that publishes records at ``level`` and above to ``topic`` of ``broker``."""

    def __init__(self, broker: Broker, *, topic: str = LOG_TOPIC, level: int = logging.INFO, backlog: int = 1024):
        super().__init__(level)
        self.broker = broker
        self.topic = topic
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(backlog)
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._publish())

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_SKIPPED) or self._loop.is_closed():
            return
        try:
            item = (self._event_of(record), self._document(record))
            self._loop.call_soon_threadsafe(self._offer, item)
        except Exception:  # a log handler must not raise into the code that logs
            self.handleError(record)

    def _offer(self, item: tuple[str, str]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    @staticmethod
    def _event_of(record: logging.LogRecord) -> str:
        return "request" if record.name == ACCESS_LOGGER else "log"

    @staticmethod
    def _document(record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            document.update(request)
        if record.exc_info and record.exc_info[1] is not None:
            document["error"] = repr(record.exc_info[1])
        return _encode(document).decode()

    async def _publish(self) -> None:
        while True:
            event, data = await self._queue.get()
            if self.dropped:
                data = data[:-1] + f',"dropped_before":{self.dropped}}}'
                self.dropped = 0
            with contextlib.suppress(ChuteError, OSError):  # a broker outage loses log lines, not the service
                await self.broker.publish(self.topic, data, event)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class AccessLog:
    """Log every finished HTTP request to ``chute.access`` with method, path, status, bytes and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        detached = False

        async def counting(message: Message) -> None:
            nonlocal status, sent, detached
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.zerocopysend":
                sent += int(message.get("count", 0))
            elif message["type"] == FEED_EXTENSION:
                # A feed handed over to the server's hub (chute.feeds) is logged when its connection ends.
                end = functools.partial(self._log_detached, scope["method"], scope["path"], status, sent, started)
                message["on_close"].append(end)
                await send(message)
                detached = bool(message.get("accepted"))
                return
            await send(message)

        outcome = "complete"
        try:
            await self.app(scope, receive, counting)
        except BaseException:
            outcome = "aborted"
            raise
        finally:
            if not detached:
                self._log(scope["method"], scope["path"], status, sent, started, outcome)

    def _log_detached(
        self, method: str, path: str, status: int, sent: int, started: float, outcome: str, more: int
    ) -> None:
        """The end of a detached feed: ``outcome`` as :mod:`chute.feeds` reports it, ``more`` bytes after the
        handover."""
        ending = "aborted" if outcome in ("send timeout", "error") else "complete"
        self._log(method, path, status, sent + more, started, ending)

    def _log(self, method: str, path: str, status: int, sent: int, started: float, outcome: str) -> None:
        request = {
            "method": method,
            "path": path,
            "status": status,
            "bytes": sent,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "outcome": outcome,
        }
        self.logger.info(
            "%s %s %d %d bytes in %.1f ms",
            method,
            path,
            status,
            sent,
            request["duration_ms"],
            extra={"request": request},
        )
