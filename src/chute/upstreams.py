"""Upstreams a proxy may reach: named URLs from settings, and a guard on every connection made to them.

Theory of operation. An :class:`Allowlist` holds named :class:`Upstream` URLs; their origins (scheme, host, port)
are the only ones :func:`upstream_client` will talk to. The guard has two layers, both in the client's transport,
so every request is checked, redirects included (a proxy follows them itself, each one a new request):

- the *origin* of each request must be an allowlisted one (``http``/``https``, no credentials in the URL);
- the *address*: the host is resolved with ``getaddrinfo`` (which also reads ``127.1``, ``2130706433``,
  ``0x7f000001`` or ``0177.0.0.1`` as the loopback address they are), every address it resolves to is checked
  (:func:`refusal`: loopback, private, link-local such as the cloud metadata address ``169.254.169.254``,
  multicast, reserved..., also inside IPv4-mapped, 6to4 and NAT64 IPv6 forms), and the connection is made to a
  checked address, never by name again. A DNS answer that changes between the check and the connection (DNS
  rebinding) cannot lead elsewhere; TLS still verifies the certificate against the host name (SNI), and the
  ``Host`` header is the URL's. An upstream with ``allow_private`` may resolve to any address.

The connection itself is a plain asyncio protocol rather than anyio's socket stream: httpcore reads 64 KiB at a
time, and anyio pauses and resumes the socket around each read and splits the event loop's 256 KiB reads into
64 KiB slices; through it a relay moved ~0.5 GB/s on loopback. Here a read returns a whole chunk as the loop
received it, and the socket is paused only when 256 KiB wait unread. ``./scripts/bench-proxy`` compares the
whole relay with a default httpx client behind ``StreamingResponse`` (``benchmarks/README.md``, proxied downloads).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http.cookiejar
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

import anyio
import httpcore
import httpx
from pydantic import ConfigDict

from chute.__about__ import __version__
from chute.exceptions import ConfigurationError, NotFound, UpstreamRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
READ_AHEAD = 256 * 1024
"""Unread bytes at which reading from an upstream pauses: larger buffers measured slower (the data leaves the CPU
cache before it is copied on), and it bounds what a stalled client pins per upstream connection."""
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclasses.dataclass(frozen=True)
class Upstream:
    """A URL a proxy may fetch; ``allow_private`` lets its host resolve to loopback and private addresses."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    url: str
    allow_private: bool = False

    def __post_init__(self) -> None:
        origin_of(self.url, error=ConfigurationError)


def origin_of(url: str | httpx.URL, *, error: type[Exception] = UpstreamRefused) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an ``http``/``https`` URL without credentials; ``error`` for any other."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise error(f"not a valid URL: {exc}") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise error(f"only http and https upstreams are supported, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.raw_host:
        raise error("the upstream URL has no host")
    if parsed.userinfo:
        raise error("credentials in an upstream URL are not supported")
    host = parsed.raw_host.decode("ascii").lower()
    return parsed.scheme, host, parsed.port or DEFAULT_PORTS[parsed.scheme]


class Allowlist:
    """Named upstreams, and the origins they allow requests to."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self.upstreams = dict(upstreams)
        self.origins: dict[tuple[str, str, int], bool] = {}
        for upstream in self.upstreams.values():
            origin = origin_of(upstream.url, error=ConfigurationError)
            # One host, several upstreams: it is private if any of them says so (they reach the same addresses).
            self.origins[origin] = self.origins.get(origin, False) or upstream.allow_private

    def __getitem__(self, name: str) -> Upstream:
        try:
            return self.upstreams[name]
        except KeyError:
            raise NotFound(f"no upstream named {name!r}") from None

    def check(self, url: str | httpx.URL) -> bool:
        """Whether ``url``'s origin may resolve to private addresses; :class:`UpstreamRefused` if not allowed."""
        origin = origin_of(url)
        if origin not in self.origins:
            scheme, host, port = origin
            raise UpstreamRefused(f"{scheme}://{host}:{port} is not an allowlisted upstream")
        return self.origins[origin]

    def allows_private(self, host: str, port: int) -> bool:
        """For a connection to ``host:port``: whether private addresses are allowed (refused when not listed)."""
        allowed = [private for (_, h, p), private in self.origins.items() if (h, p) == (host.lower(), port)]
        if not allowed:
            raise UpstreamRefused(f"{host}:{port} is not an allowlisted upstream")
        return any(allowed)


# -- addresses


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), which is where it leads."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why an upstream without ``allow_private`` may not connect to ``address``; ``None`` for a public one."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = refusal(inner)
        return None if reason is None else f"{reason} (inside {address})"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    return next((f"a {name} address" for name, hit in checks if hit), None)


async def resolve(host: str, port: int) -> list[tuple[IPAddress, tuple[Any, ...]]]:
    """Every address ``host`` resolves to, with the socket address to connect to; numeric forms normalized."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    found: dict[IPAddress, tuple[Any, ...]] = {}
    for _, _, _, _, sockaddr in infos:
        found.setdefault(ipaddress.ip_address(sockaddr[0]), sockaddr)
    return list(found.items())


async def vet(host: str, port: int, *, allow_private: bool) -> list[tuple[IPAddress, tuple[Any, ...]]]:
    """Resolve ``host`` and check every address; :class:`UpstreamRefused` if any one is refused."""
    addresses = await resolve(host, port)
    if not allow_private:
        for address, _ in addresses:
            reason = refusal(address)
            if reason is not None:
                raise UpstreamRefused(f"{host} resolves to {address}, {reason}")
    return addresses


# -- the connection


class _Receiver(asyncio.Protocol):
    """Buffers what arrives until the stream reads it; pauses the socket past ``READ_AHEAD`` unread bytes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.eof = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= READ_AHEAD and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _wait(future: asyncio.Future[None], seconds: float | None) -> None:
    if seconds is None:
        await future
    else:
        async with asyncio.timeout(seconds):
            await future


class _Stream(httpcore.AsyncNetworkStream):
    """An httpcore network stream over an asyncio transport: a read returns one received chunk, however large."""

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver

    # httpcore's interface: every method takes its own timeout.
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        # ``max_bytes`` is httpcore's 64 KiB: a whole chunk (up to the loop's 256 KiB read) is given instead.
        receiver = self._receiver
        if not receiver.chunks and not receiver.eof:
            receiver.waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(receiver.waiter, timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout(f"nothing to read for {timeout} s") from None
            finally:
                receiver.waiter = None
        if receiver.chunks:
            data = receiver.chunks.popleft()
            receiver.buffered -= len(data)
            if receiver.paused and receiver.buffered < READ_AHEAD:
                receiver.paused = False
                self._transport.resume_reading()
            return data
        if receiver.error is not None:
            raise httpcore.ReadError(str(receiver.error)) from receiver.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if self._receiver.drained is not None:
            try:
                await _wait(self._receiver.drained, timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout(f"could not write for {timeout} s") from None

    async def aclose(self) -> None:
        # At once, not after a TLS goodbye: an upstream must see a client that left without delay.
        self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport,
                self._receiver,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout} s") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._receiver.transport = transport
        return _Stream(transport, self._receiver)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # httpcore asks before it reuses a kept-alive connection
            return bool(self._receiver.chunks) or self._receiver.eof
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return self._transport.get_extra_info(names[info]) if info in names else None


async def _open(
    address: IPAddress, sockaddr: tuple[Any, ...], local_address: str | None, options: Iterable[Any]
) -> _Stream:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in options:
            sock.setsockopt(*option)
        if local_address is not None:
            sock.bind((local_address, 0))
        await loop.sock_connect(sock, sockaddr)
        transport, receiver = await loop.create_connection(_Receiver, sock=sock)
    except BaseException:
        sock.close()
        raise
    return _Stream(transport, receiver)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend for :class:`GuardedTransport`: connections to vetted addresses only."""

    def __init__(self, allowlist: Allowlist) -> None:
        self.allowlist = allowlist

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        allow_private = self.allowlist.allows_private(host, port)
        try:
            with anyio.fail_after(timeout):
                addresses = await vet(host, port, allow_private=allow_private)
                failures = []
                for address, sockaddr in addresses:
                    try:
                        return await self._connect(address, sockaddr, local_address, socket_options or ())
                    except OSError as exc:
                        failures.append(f"{address}: {exc.strerror or exc}")
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from None
        raise httpcore.ConnectError(f"cannot connect to {host}:{port} ({'; '.join(failures) or 'no address'})")

    async def _connect(
        self, address: IPAddress, sockaddr: tuple[Any, ...], local_address: str | None, options: Iterable[Any]
    ) -> httpcore.AsyncNetworkStream:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's stream, to the same vetted address
            return await httpcore.AnyIOBackend().connect_tcp(
                str(address), sockaddr[1], local_address=local_address, socket_options=options
            )
        return await _open(address, sockaddr, local_address, options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UpstreamRefused("Unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that reaches only the allowlist's origins, each on an address checked as it connects.

    httpx offers no way to hand its transport a network backend: the connection pool is replaced with one built
    with the same options and :class:`GuardedBackend` (``_pool`` is the attribute httpx's own transport uses;
    the tests pin it).
    """

    def __init__(
        self, allowlist: Allowlist, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self.allowlist = allowlist
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(allowlist),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.allowlist.check(request.url)
        return await super().handle_async_request(request)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A shared client must not carry one client's upstream cookies into another's request."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def upstream_client(
    allowlist: Allowlist,
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    max_connections: int = 100,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """A shared httpx client for :class:`~chute.responses.ProxyStream`: the allowlist and address guard on every
    request, no redirects followed (the proxy follows them, each through the guard again), ``connect_timeout``
    to connect and ``read_timeout`` between two reads, no cookies kept, nothing taken from the environment
    (proxies, ``.netrc``). Close it with ``aclose()``."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=GuardedTransport(allowlist, verify=verify, limits=limits),
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        headers={"user-agent": f"chute/{__version__}"},
    )
