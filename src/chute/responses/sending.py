"""What every chute response does around its body: a send deadline, and stopping when the client leaves."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal, Protocol

import anyio
from anyio import CancelScope
from starlette.types import Message, Receive, Scope, Send

from chute.exceptions import HTTPError, SendTimeout, StreamAborted
from chute.problems import problem, problem_response

logger = logging.getLogger("chute")

Outcome = Literal["pending", "complete", "client left", "error", "send timeout", "refused"]
"""How a response ended; "refused" is an answer other than the body (404, 406, 412, 416)."""


async def answer_early_failure(failure: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a stream whose source failed before the headers went out: the failure's own problem JSON for an
    :class:`~chute.exceptions.HTTPError` (a 404 of the source, say), else a 500, never a detail of the failure."""
    logger.error("stream failed before its first byte: %s", failure, exc_info=failure)
    response = (
        problem_response(failure)
        if isinstance(failure, HTTPError)
        else problem(500, "Internal Server Error", "the stream failed before any data was sent")
    )
    await response(scope, receive, send)


class Sender:
    """Sends the headers once, then body chunks, each within the send deadline (``TimeoutError`` past it).

    uvicorn has no write timeout: without one, a client that stops reading holds its task and socket forever.
    """

    def __init__(self, send: Send, start: Message, timeout: float | None) -> None:
        self._send = send
        self._start = start
        self.timeout = timeout
        self.started = False

    async def start(self) -> None:
        self.started = True
        with anyio.fail_after(self.timeout):
            await self._send(self._start)

    async def body(self, data: bytes, *, more: bool) -> None:
        if not self.started:
            await self.start()
        with anyio.fail_after(self.timeout):
            await self._send({"type": "http.response.body", "body": data, "more_body": more})


async def cancel_on_disconnect(receive: Receive, scope: CancelScope) -> None:
    """Cancel ``scope`` when the client disconnects.

    Servers of ASGI spec < 2.4 (uvicorn reports 2.3) silently drop sends after a disconnect, so a response that
    only sends would never notice; watching ``receive`` is the one reliable signal.
    """
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class Supervised(Protocol):
    """A response whose body :func:`supervise` runs: it says how it ended and how long clients may stall."""

    outcome: Outcome
    send_timeout: float | None


async def supervise(
    response: Supervised,
    receive: Receive,
    pump: Callable[[], Awaitable[None]],
    *,
    position: Callable[[], int],
    unit: str,
    helpers: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> None:
    """Run ``pump`` (which sends the body) with ``helpers`` beside it until it ends, fails or the client leaves.

    Every task stops when the client disconnects. A stalled client (``TimeoutError`` from :class:`Sender`) becomes
    :class:`~chute.exceptions.SendTimeout`; a :class:`~chute.exceptions.StreamAborted` from the pump is raised
    as is. Both are raised after the task group has exited, so callers (and servers) see them bare, not wrapped
    in an ExceptionGroup; ``position()`` (in ``unit``) says how far the body got.
    """
    failure: StreamAborted | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_disconnect, receive, group.cancel_scope)
        for helper in helpers:
            group.start_soon(helper)
        try:
            await pump()
        except TimeoutError:  # before OSError, of which it is a subclass
            response.outcome = "send timeout"
            failure = SendTimeout(f"the client read nothing for {response.send_timeout} s", index=position())
            logger.warning("%s (after %d %s)", failure, position(), unit)
        except OSError:  # ASGI 2.4 servers raise on send after the client left
            response.outcome = "client left"
        except StreamAborted as exc:
            response.outcome = "error"
            failure = exc
        group.cancel_scope.cancel()
    if response.outcome == "pending":  # the pump neither finished nor failed: the watcher cancelled it
        response.outcome = "client left"
    if response.outcome == "client left":
        logger.info("client left after %d %s", position(), unit)
    if failure is not None:
        raise failure
