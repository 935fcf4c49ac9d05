"""What every chute response does around its body: a send deadline, and stopping when the client leaves."""

from __future__ import annotations

import anyio
from anyio import CancelScope
from starlette.types import Message, Receive, Send


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
