"""The upstream allowlist and address guard: which URLs and addresses a proxy may reach, checked as it connects."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from chute import upstreams
from chute.exceptions import ConfigurationError, NotFound, UpstreamRefused
from chute.upstreams import Allowlist, GuardedBackend, Upstream, refusal, upstream_client, vet
from tests.conftest import ServeApp, free_port

# -- addresses


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "private"),  # documentation
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == f"a {reason} address"


@pytest.mark.parametrize(
    ("address", "reason", "inside"),
    [
        ("::ffff:127.0.0.1", "loopback", "::ffff:7f00:1"),
        ("::ffff:169.254.169.254", "link-local", "::ffff:a9fe:a9fe"),
        ("64:ff9b::7f00:1", "loopback", "64:ff9b::7f00:1"),  # NAT64
        ("2002:7f00:1::", "loopback", "2002:7f00:1::"),  # 6to4
        ("2002:a9fe:a9fe::1", "link-local", "2002:a9fe:a9fe::1"),
    ],
)
def test_ipv4_inside_ipv6_is_judged_by_where_it_leads(address: str, reason: str, inside: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == f"a {reason} address (inside {inside})"


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",  # short form
        "2130706433",  # decimal
        "0x7f000001",  # hexadecimal
        "0177.0.0.1",  # octal
        "0",  # 0.0.0.0, which reaches this host
        "localhost",
        "::1",
        "::ffff:7f00:1",  # IPv4-mapped, hex
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "0xa9.0xfe.0xa9.0xfe",  # the metadata address in hexadecimal
    ],
)
@pytest.mark.anyio
async def test_every_spelling_of_a_local_address_is_resolved_and_refused(host: str) -> None:
    with pytest.raises(UpstreamRefused, match=f"^{host} resolves to "):
        await vet(host, 80, allow_private=False)
    assert await vet(host, 80, allow_private=True)


@pytest.mark.anyio
async def test_one_refused_address_among_public_ones_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [("93.184.216.34", 80), ("127.0.0.1", 80)]
    monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo(answers))
    with pytest.raises(UpstreamRefused, match=r"127\.0\.0\.1, a loopback address"):
        await vet("mixed.example", 80, allow_private=False)


def fake_getaddrinfo(*answers: list[tuple[str, int]]) -> Any:
    """A getaddrinfo that gives each answer in turn (the last one again when they run out), counting calls."""

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        getaddrinfo.calls += 1  # type: ignore[attr-defined]
        answer = answers[min(getaddrinfo.calls, len(answers)) - 1]  # type: ignore[attr-defined]
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, p)) for ip, p in answer
        ]

    getaddrinfo.calls = 0  # type: ignore[attr-defined]
    return getaddrinfo


# -- the allowlist


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "/relative", "http://user:secret@example.com/", "http:///nohost"],
)
def test_an_upstream_must_be_an_http_url_without_credentials(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Upstream(url)


def test_the_allowlist_knows_names_and_origins() -> None:
    allowlist = Allowlist(
        {
            "data": Upstream("https://Example.com/data.bin"),
            "local": Upstream("http://127.0.0.1:8000/stream-csv", allow_private=True),
        }
    )
    assert allowlist["data"].url == "https://Example.com/data.bin"
    with pytest.raises(NotFound):
        allowlist["other"]
    assert allowlist.check("https://example.com:443/elsewhere?x=1") is False  # any path of an allowed origin
    assert allowlist.check("http://127.0.0.1:8000/") is True
    for refused in (
        "http://example.com/data.bin",  # another scheme
        "https://example.com:8443/",  # another port
        "https://sub.example.com/",
        "http://127.0.0.1:8001/",
        "http://127.1:8000/",  # the same address, spelt otherwise: not the allowlisted origin
        "http://localhost:8000/",
        "https://user:pw@example.com/",
    ):
        with pytest.raises(UpstreamRefused):
            allowlist.check(refused)


# -- the client, against a real server


def echo_app() -> Starlette:
    async def echo(request: Request) -> Response:
        cookie = request.headers.get("cookie", "")
        response = PlainTextResponse(f"host={request.headers['host']} cookie={cookie}")
        response.set_cookie("session", "upstream-secret")
        return response

    return Starlette(routes=[Route("/echo", echo)])


@pytest.fixture
def upstream_port(serve_app: ServeApp) -> int:
    return int(serve_app(echo_app()).rsplit(":", 1)[1])


@pytest.mark.anyio
async def test_an_allowlisted_private_upstream_is_reached_and_keeps_no_cookies(upstream_port: int) -> None:
    url = f"http://127.0.0.1:{upstream_port}/echo"
    async with upstream_client(Allowlist({"echo": Upstream(url, allow_private=True)})) as client:
        first = await client.get(url)
        second = await client.get(url)
    assert first.text == f"host=127.0.0.1:{upstream_port} cookie="
    assert "set-cookie" in first.headers
    assert second.text == f"host=127.0.0.1:{upstream_port} cookie="  # one client's cookie never reaches another


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "localhost", "2130706433", "[::ffff:7f00:1]"])
@pytest.mark.anyio
async def test_a_loopback_upstream_without_allow_private_is_refused(upstream_port: int, host: str) -> None:
    url = f"http://{host}:{upstream_port}/echo"
    async with upstream_client(Allowlist({"echo": Upstream(url)})) as client:
        with pytest.raises(UpstreamRefused, match="a loopback address"):
            await client.get(url)


@pytest.mark.anyio
async def test_origins_off_the_allowlist_are_refused_before_any_connection(upstream_port: int) -> None:
    allowed = f"http://127.0.0.1:{upstream_port}/echo"
    async with upstream_client(Allowlist({"echo": Upstream(allowed, allow_private=True)})) as client:
        for url in (f"http://127.0.0.1:{free_port()}/", f"http://localhost:{upstream_port}/echo"):
            with pytest.raises(UpstreamRefused, match="is not an allowlisted upstream"):
                await client.get(url)


@pytest.mark.anyio
async def test_a_name_is_resolved_once_and_the_vetted_address_is_the_one_connected(
    upstream_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the answer checked is the answer used; a later answer is checked anew."""
    getaddrinfo = fake_getaddrinfo([("127.0.0.1", upstream_port)], [("10.1.2.3", upstream_port)])
    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    url = f"http://rebind.example:{upstream_port}/echo"
    async with upstream_client(Allowlist({"echo": Upstream(url, allow_private=True)})) as client:
        response = await client.get(url)
        # The name was resolved once, the connection went to that address, and the Host header kept the name.
        assert response.text == f"host=rebind.example:{upstream_port} cookie="
        assert getaddrinfo.calls == 1
    monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo([("10.1.2.3", upstream_port)]))
    async with upstream_client(Allowlist({"echo": Upstream(url)})) as client:
        with pytest.raises(UpstreamRefused, match=r"rebind\.example resolves to 10\.1\.2\.3, a private address"):
            await client.get(url)


@pytest.mark.anyio
async def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public answer is connected to as such: never looked up again by name between the check and connect."""
    monkeypatch.setattr(anyio, "getaddrinfo", fake_getaddrinfo([("93.184.216.34", 80)], [("127.0.0.1", 80)]))
    connected: list[tuple[Any, ...]] = []

    async def refuse(address: Any, sockaddr: tuple[Any, ...], local: Any, options: Any) -> Any:
        connected.append(sockaddr)
        raise ConnectionRefusedError(111, "refused in the test")

    monkeypatch.setattr(upstreams, "_open", refuse)
    url = "http://public.example/data"
    async with upstream_client(Allowlist({"data": Upstream(url)})) as client:
        with pytest.raises(httpx.ConnectError, match=r"93\.184\.216\.34"):
            await client.get(url)
        assert connected == [("93.184.216.34", 80)]
        with pytest.raises(UpstreamRefused, match=r"127\.0\.0\.1, a loopback address"):  # rebound: checked again
            await client.get(url)
    assert connected == [("93.184.216.34", 80)]


@pytest.mark.anyio
async def test_the_client_uses_the_guarded_backend() -> None:
    """The one place chute relies on httpx internals (its transport's ``_pool``): pinned here."""
    client = upstream_client(Allowlist({}))
    async with client:
        transport = client._transport
        pool = transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, GuardedBackend)
