"""``ProxyStream``: an upstream URL's response passed through as received, as an ASGI response.

Theory of operation. The whole response runs under :func:`~chute.responses.sending.supervise`, so a client that
leaves cancels it wherever it is: connecting, waiting for the upstream's headers, or relaying the body. Either
way the upstream response is closed at once (shielded from the cancellation), which drops its connection.

Before the headers. The request goes out through a shared ``httpx.AsyncClient`` (built by
:func:`chute.upstreams.upstream_client`: allowlist and address guard, connect and between-reads timeouts) with
only the client's safe headers (:data:`FORWARDED`; ``Accept-Encoding: identity`` when the client sent none, so
the upstream never compresses for a client that did not ask). Redirects are followed here, at most
``max_redirects``, each as a new request that the client's guard checks again. Whatever fails before the
upstream's headers is a problem JSON answer: a timeout is 504, anything else 502 (a refused connection or
address, a broken answer, a 5xx, too many redirects). The detail names the kind of failure, not the upstream;
the log has the rest.

Statuses. 2xx, 304, 404, 410, 412 and 416 are passed through with their bodies; every other upstream status
(other 3xx, 4xx, 5xx) is answered 502 with ``upstream_status`` in the problem JSON: the upstream's error page is
not this service's answer, and its 401/407 challenges are not the client's to answer.

The headers are the upstream's :data:`PASSED` ones (content type and encoding, length, range, validators,
caching), minus any named in its ``Connection``; hop-by-hop headers, ``Set-Cookie``, ``Location``,
authentication and the rest are dropped. ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy:
sandbox`` are added: the upstream's content is served from this origin and must not run in it.

The body is ``aiter_raw()``: the bytes as received, never decompressed, so ``Content-Encoding`` and
``Content-Length`` stay true. On a server with chute's splice extension (:mod:`chute.protocol`, Linux), a GET
whose upstream answered a ``Content-Length`` body of :data:`SPLICE_AT_LEAST` or more over plain HTTP/1.x takes
a zero-copy path instead: the bytes h11 and the connection already hold are sent, the upstream's transport stops
reading, and the server moves the rest from socket to socket in the kernel (:func:`chute.zerocopy.splice_all`),
within the send deadline and the upstream client's read timeout between reads. The connection is closed
afterwards, never returned to the pool. Chunked and TLS upstreams (splice cannot decrypt) keep ``aiter_raw()``.

Each chunk is sent within the send deadline. After the headers nothing is ever written into the body to report
an error: a failed or stalled upstream (no byte for the read timeout) aborts the connection with
:class:`~chute.exceptions.StreamAborted`, and the client sees fewer bytes than ``Content-Length`` or a chunked
body without its end.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import h11
import httpx
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chute import upstreams, zerocopy
from chute.exceptions import BadGateway, ConfigurationError, GatewayTimeout, HTTPError, StreamAborted, UpstreamRefused
from chute.problems import problem_response
from chute.responses.sending import Outcome, Sender, supervise

logger = logging.getLogger("chute")

FORWARDED = (
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "accept",
    "accept-encoding",
)
"""Request headers passed to the upstream; never cookies, credentials or the client's address."""

PASSED = frozenset(
    {
        b"content-type",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-language",
        b"content-disposition",
        b"accept-ranges",
        b"etag",
        b"last-modified",
        b"cache-control",
        b"expires",
        b"age",
        b"vary",
        b"repr-digest",
        b"content-digest",
    }
)
"""Response headers passed from the upstream, unless its ``Connection`` header names them."""

PASSED_STATUSES = frozenset({304, 404, 410, 412, 416})
"""Upstream statuses passed through besides 2xx."""

REDIRECTS = frozenset({301, 302, 303, 307, 308})

SPLICE_AT_LEAST = 256 * 1024
"""Bodies shorter than this take the ordinary relay: setting up a splice (a pipe, two descriptors) and dropping
the kept-alive connection would cost more than the copies it saves."""


class ProxyStream(Response):
    """Relay ``url`` from ``client`` to the client: statuses, safe headers and the body bytes as received.

    ``client`` is a shared ``httpx.AsyncClient``; :func:`chute.upstreams.upstream_client` builds one that
    reaches only allowlisted upstreams, on checked addresses, and follows no redirects itself (a client that
    follows them would bypass ``max_redirects`` and hand back only the last answer). GET and HEAD are relayed
    as such; ``Range`` and conditional requests are the upstream's to answer. ``send_timeout`` cuts a client
    that stops reading; ``headers`` are added to every relayed answer.
    """

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        client: httpx.AsyncClient,
        max_redirects: int = 5,
        send_timeout: float | None = 60.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if max_redirects < 0:
            raise ConfigurationError("max_redirects must be 0 or more")
        self.url = httpx.URL(url)
        self.client = client
        self.max_redirects = max_redirects
        self.send_timeout = send_timeout
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.outcome: Outcome = "pending"
        self.bytes_sent = 0
        self.upstream_status: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await supervise(
            self,
            receive,
            functools.partial(self._run, scope, receive, send),
            position=lambda: self.bytes_sent,
            unit="bytes",
        )

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = "HEAD" if scope.get("method") == "HEAD" else "GET"
        try:
            upstream = await self._open(method, Headers(scope=scope))
        except HTTPError as exc:
            self.outcome = "error"
            await problem_response(exc)(scope, receive, send)
            return
        try:
            self.status_code = upstream.status_code
            headers = self._response_headers(upstream)
            start: Message = {"type": "http.response.start", "status": self.status_code, "headers": headers}
            sender = Sender(send, start, self.send_timeout)
            if method == "GET" and zerocopy.SPLICE_EXTENSION in scope.get("extensions", {}):
                await self._relay(upstream, sender, splice=functools.partial(self._splice, scope, send, headers))
            else:
                await self._relay(upstream, sender)
        finally:
            await _close(upstream)

    async def _open(self, method: str, request_headers: Headers) -> httpx.Response:
        """The upstream's answer, redirects followed, headers read; :class:`HTTPError` for anything else."""
        headers = {name: request_headers[name] for name in FORWARDED if name in request_headers}
        headers.setdefault("accept-encoding", "identity")
        url = self.url
        for _ in range(self.max_redirects + 1):
            response = await self._send(method, url, headers)
            self.upstream_status = response.status_code
            location = response.headers.get("location")
            if response.status_code not in REDIRECTS or location is None:
                break
            await _close(response)
            try:
                url = url.join(location)
            except httpx.InvalidURL as exc:
                raise self._failed(BadGateway("the upstream redirected to an invalid URL"), url, exc) from None
            logger.debug("upstream %s redirects to %s", response.url, url)
        else:
            raise self._failed(BadGateway(f"the upstream redirected more than {self.max_redirects} times"), url)
        status = response.status_code
        if 200 <= status < 300 or status in PASSED_STATUSES:
            return response
        await _close(response)
        raise self._failed(BadGateway(f"the upstream answered {status}", upstream_status=status), url)

    async def _send(self, method: str, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        request = self.client.build_request(method, url, headers=headers)
        try:
            return await self.client.send(request, stream=True)
        except UpstreamRefused as exc:
            raise self._failed(UpstreamRefused("the upstream is not one this server may reach"), url, exc) from None
        except httpx.TimeoutException as exc:
            error = GatewayTimeout(f"the upstream did not {_phase(exc)} in time")
            raise self._failed(error, url, exc) from None
        except httpx.HTTPError as exc:  # a refused or cut connection, a malformed answer
            raise self._failed(BadGateway(f"the upstream failed: {type(exc).__name__}"), url, exc) from None

    def _failed(self, error: HTTPError, url: httpx.URL, cause: Exception | None = None) -> HTTPError:
        because = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        logger.warning("proxy of %s: %s%s", url, error.detail, because)
        return error

    def _response_headers(self, upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
        named = {
            token.strip().lower().encode("latin-1")
            for value in upstream.headers.get_list("connection")
            for token in value.split(",")
        }
        headers = [(k, v) for k, v in self.raw_headers if k not in (b"content-type", b"content-length")]
        for key, value in upstream.headers.raw:
            name = key.lower()
            if name in PASSED and name not in named:
                headers.append((name, value))
        headers.append((b"x-content-type-options", b"nosniff"))
        headers.append((b"content-security-policy", b"sandbox"))
        return headers

    async def _relay(
        self,
        upstream: httpx.Response,
        sender: Sender,
        splice: Callable[[httpx.Response, Sender], Awaitable[bool]] | None = None,
    ) -> None:
        await sender.start()  # the client learns the status now, however slow the body
        try:
            if splice is None or not await splice(upstream, sender):
                async for chunk in upstream.aiter_raw():
                    await sender.body(chunk, more=True)
                    self.bytes_sent += len(chunk)
        except (httpx.HTTPError, zerocopy.SourceError) as exc:  # a read timeout, a cut connection, a short body
            stalled = isinstance(exc, httpx.TimeoutException) or getattr(exc, "stalled", False)
            what = "stalled" if stalled else f"failed ({type(exc).__name__}: {exc})"
            logger.error("proxy of %s: the upstream %s after %d bytes; aborted", upstream.url, what, self.bytes_sent)
            raise StreamAborted(f"the upstream {what}", index=self.bytes_sent) from exc
        await sender.body(b"", more=False)
        self.outcome = "complete"

    async def _splice(
        self, scope: Scope, send: Send, headers: list[tuple[bytes, bytes]], upstream: httpx.Response, sender: Sender
    ) -> bool:
        """Relay the body socket to socket in the kernel, when it can be (module docstring); whether it was."""
        if zerocopy.SPLICE_EXTENSION not in scope.get("extensions", {}):
            return False  # withdrawn once the headers went out (a compressing middleware must see every byte)
        length = _spliceable_length(upstream, headers)
        detached = _detach(upstream, length) if length is not None else None
        if length is None or detached is None:
            return False
        source, buffered = detached
        if buffered:
            await sender.body(buffered, more=True)
            self.bytes_sent += len(buffered)
        rest = length - len(buffered)
        if rest:
            read_timeout = self.client.timeout.read
            message: Message = {
                "type": zerocopy.SPLICE_EXTENSION,
                "source": source,
                "count": rest,
                "more_body": True,
                "timeout": self.send_timeout if self.send_timeout is not None else zerocopy.DEFAULT_TIMEOUT,
                "read_timeout": read_timeout,
            }
            await send(message)
            self.bytes_sent += rest
        return True


def _spliceable_length(upstream: httpx.Response, headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length when it is worth splicing and its framing allows it: HTTP/1.x, ``Content-Length`` relayed
    as is, no transfer coding, a status that has a body."""
    if upstream.http_version not in ("HTTP/1.1", "HTTP/1.0") or "transfer-encoding" in upstream.headers:
        return None
    if upstream.status_code in (204, 304) or sum(1 for k, _ in headers if k == b"content-length") != 1:
        return None
    lengths = upstream.headers.get_list("content-length")
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None
    length = int(lengths[0])
    return length if length >= SPLICE_AT_LEAST else None


def _detach(upstream: httpx.Response, length: int) -> tuple[Any, bytes] | None:
    """The upstream's socket and the body bytes already read from it, its transport no longer reading; ``None``
    when the connection cannot be taken over (TLS: splice cannot decrypt; another network backend; unexpected
    httpx or httpcore internals).

    Neither httpx nor httpcore offers this: the bytes h11 holds past the headers are reached through their
    private attributes (the tests pin them), and anything unexpected means the ordinary relay. The connection is
    never reused afterwards: h11 did not see the body end, so closing the response closes the connection.
    """
    stream = upstream.extensions.get("network_stream")
    if not isinstance(stream, upstreams._Stream) or stream.get_extra_info("ssl_object") is not None:
        return None
    source = stream.get_extra_info("socket")
    # httpx's BoundAsyncStream > its AsyncResponseStream > httpcore's PoolByteStream > HTTP11ConnectionByteStream
    body: Any = upstream.stream
    try:
        h11_state = body._stream._httpcore_stream._stream._connection._h11_state
    except AttributeError:
        return None
    if source is None or not isinstance(h11_state, h11.Connection) or h11_state.their_state is not h11.SEND_BODY:
        return None
    held, closed = h11_state.trailing_data
    receiver = stream._receiver
    buffered = held + b"".join(receiver.chunks)
    if closed or len(buffered) > length:
        return None
    stream._transport.pause_reading()  # from now on the socket is read by splice only
    receiver.paused = True
    receiver.chunks.clear()
    receiver.buffered = 0
    return source, buffered


def _phase(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "accept a connection"
    if isinstance(exc, httpx.PoolTimeout):
        return "free a connection"
    return "answer"


async def _close(response: httpx.Response) -> None:
    """Close ``response`` (and its connection, when unfinished) even inside a cancelled scope."""
    with anyio.CancelScope(shield=True):
        await response.aclose()
