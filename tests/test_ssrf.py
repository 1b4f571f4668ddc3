"""SSRF: literal, encoded and resolved private addresses, redirect hops and DNS rebinding.

A "canary" TCP server counts every connection accepted; each attack must leave it at zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohappyeyeballs import AddrInfoType
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from services.config import Settings
from services.core.errors import FetchError
from services.core.netpolicy import parse_allowlist
from services.fetch import Fetcher, FetchResult
from services.net_guard import AddressRefused, find_refusal, guarded_connector, make_socket_factory


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with no allowlist (production default) and a short timeout."""
    base = Settings.from_env(
        {"NEWSDESK_DATA_DIR": str(tmp_path / "data"), "NEWSDESK_HTTP_TIMEOUT": "2"}
    )
    assert base.fetch_allow == ()
    return base.with_overrides(**overrides)


@dataclass
class Canary:
    """TCP listeners on one port (127.0.0.1 and, if possible, ::1) counting accepted sockets."""

    port: int
    ipv6: bool = False
    connections: int = 0
    servers: list[asyncio.Server] = field(default_factory=list)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            await writer.drain()
        writer.close()

    async def listen(self, host: str) -> None:
        server = await asyncio.start_server(self._handle, host, self.port, reuse_address=False)
        self.servers.append(server)
        if self.port == 0:
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


async def start_canary(port: int = 0, *, ipv6: bool = True) -> Canary:
    canary = Canary(port)
    await canary.listen("127.0.0.1")
    if ipv6 and socket.has_ipv6:
        try:
            await canary.listen("::1")
            canary.ipv6 = True
        except OSError:
            pass
    return canary


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    server = await start_canary()
    yield server
    await server.close()


async def fetch_error(settings: Settings, url: str, **kwargs: Any) -> FetchError:
    async with Fetcher(settings, **kwargs) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    return info.value


ATTACKS = [
    "http://127.0.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.1:{port}/",
    "http://127.1:{port}/",
    "http://017700000001:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://127.0.0.1.:{port}/",
    "http://%31%32%37.0.0.1:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://localhost:{port}/",
    "http://LocalHost:{port}/",
    "http://0.0.0.0:{port}/",
    "http://169.254.169.254/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
]


@pytest.mark.parametrize("template", ATTACKS)
async def test_private_targets_are_refused_without_a_connection(
    canary: Canary, tmp_path: Path, template: str
) -> None:
    if "[::1]" in template and not canary.ipv6:
        pytest.skip("no IPv6 loopback")
    url = template.format(port=canary.port)
    error = await fetch_error(make_settings(tmp_path), url)
    assert error.code == "private_address", (url, error.code, str(error))
    assert "non-public address" in str(error)
    assert canary.connections == 0


async def test_canary_control_allowlisted_target_is_reached(canary: Canary, tmp_path: Path) -> None:
    # Proves the canary would notice: the same fetch with the port allowlisted gets through.
    settings = make_settings(tmp_path, fetch_allow=(f"127.0.0.1:{canary.port}",))
    async with Fetcher(settings) as fetcher:
        result = await fetcher.fetch(f"http://127.0.0.1:{canary.port}/")
    assert result.body == b"canary" and canary.connections == 1


async def test_allowlist_by_port_does_not_open_other_ports(canary: Canary, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fetch_allow=(f"127.0.0.1:{canary.port + 1}",))
    error = await fetch_error(settings, f"http://127.0.0.1:{canary.port}/")
    assert error.code == "private_address" and canary.connections == 0


@pytest.mark.parametrize(
    "template", ["http://127.0.0.1:{port}/", "http://[::ffff:127.0.0.1]:{port}/"]
)
async def test_the_guard_alone_refuses_literal_ips(
    canary: Canary, tmp_path: Path, template: str
) -> None:
    # Without the Fetcher's early check: aiohttp skips the resolver for IP literals, so only
    # the socket factory stands between the URL and the connection.
    connector = guarded_connector(make_settings(tmp_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(template.format(port=canary.port))
    assert isinstance(info.value.os_error, AddressRefused)
    assert find_refusal(info.value) is not None
    assert canary.connections == 0


def test_socket_factory_checks_the_dialled_sockaddr() -> None:
    factory = make_socket_factory(parse_allowlist(["10.0.0.0/8", "[::1]:8080"]))
    tcp = socket.SOCK_STREAM
    refused: list[AddrInfoType] = [
        (socket.AF_INET, tcp, 6, "", ("127.0.0.1", 80)),
        (socket.AF_INET, tcp, 6, "", ("169.254.169.254", 80)),
        (socket.AF_INET6, tcp, 6, "", ("::ffff:127.0.0.1", 80, 0, 0)),
        (socket.AF_INET6, tcp, 6, "", ("::1", 8081, 0, 0)),
        (socket.AF_INET6, tcp, 6, "", ("fe80::1%lo", 80, 0, 1)),
        (socket.AF_INET, tcp, 6, "", ("not-an-ip", 80)),
        (socket.AF_UNIX, tcp, 0, "", ("/tmp/x.sock", 0)),
    ]
    for addr_info in refused:
        with pytest.raises(AddressRefused) as info:
            factory(addr_info)
        assert info.value.errno == errno.EACCES and info.value.code == "private_address"
    allowed: list[AddrInfoType] = [
        (socket.AF_INET, tcp, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET, tcp, 6, "", ("10.1.2.3", 80)),
    ]
    if socket.has_ipv6:
        allowed.append((socket.AF_INET6, tcp, 6, "", ("::1", 8080, 0, 0)))
    for addr_info in allowed:
        sock = factory(addr_info)
        assert sock.family == addr_info[0]
        sock.close()


def test_find_refusal_sees_through_combined_attempts() -> None:
    # aiohappyeyeballs folds several failed attempts into one plain OSError.
    combined = OSError(
        errno.EACCES,
        "Multiple exceptions: refused to connect to non-public address 127.0.0.1:80, "
        "refused to connect to non-public address [::1]:80",
    )
    assert find_refusal(combined) is not None
    assert find_refusal(OSError(errno.ECONNREFUSED, "Connection refused")) is None


# -- redirect hops ------------------------------------------------------------------------------


async def redirector(target: str) -> TestServer:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_redirect_to_a_private_address_is_refused(
    canary: Canary, tmp_path: Path, host: str
) -> None:
    server_a = await redirector(f"http://{host}:{canary.port}/")
    try:
        assert server_a.port is not None
        settings = make_settings(tmp_path, fetch_allow=(f"127.0.0.1:{server_a.port}",))
        error = await fetch_error(settings, f"http://127.0.0.1:{server_a.port}/")
    finally:
        await server_a.close()
    assert error.code == "private_address", str(error)
    assert canary.connections == 0


# -- DNS rebinding ------------------------------------------------------------------------------


class RebindingResolver(AbstractResolver):
    """Answers ``answers[0]`` on the first lookup, then ``answers[1]`` for ever after."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(len(self.calls), len(self.answers) - 1)]
        self.calls.append(host)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


@dataclass
class Rebinding:
    """What each side saw: the lookups, the requests on 127.0.0.2, the canary on 127.0.0.1."""

    outcome: FetchResult | FetchError
    lookups: list[str]
    hits: list[str]
    canary_connections: int


async def rebind(tmp_path: Path, *, guarded: bool) -> Rebinding:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path != "/first":
            return web.Response(text="second")
        response = web.Response(status=302, headers={"Location": "/again"})
        response.force_close()  # the redirect needs a new connection, so a new lookup
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.2", port=0)
    await server.start_server()
    assert server.port is not None
    canary = await start_canary(server.port, ipv6=False)  # 127.0.0.1, same port
    resolver = RebindingResolver(["127.0.0.2", "127.0.0.1"])
    settings = make_settings(tmp_path, fetch_allow=("127.0.0.2/32",))
    unguarded = lambda: aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)  # noqa: E731
    outcome: FetchResult | FetchError
    try:
        async with Fetcher(
            settings, resolver=resolver, connector_factory=None if guarded else unguarded
        ) as fetcher:
            try:
                outcome = await fetcher.fetch(f"http://rebind.test:{server.port}/first")
            except FetchError as exc:
                outcome = exc
    finally:
        await canary.close()
        await server.close()
    return Rebinding(outcome, resolver.calls, hits, canary.connections)


async def test_dns_rebinding_second_connection_is_refused(tmp_path: Path) -> None:
    seen = await rebind(tmp_path, guarded=True)
    assert isinstance(seen.outcome, FetchError)
    assert seen.outcome.code == "private_address", str(seen.outcome)
    assert "127.0.0.1" in str(seen.outcome)
    assert seen.lookups == ["rebind.test", "rebind.test"]
    assert seen.hits == ["/first"]
    assert seen.canary_connections == 0


async def test_dns_rebinding_control_without_the_guard_reaches_the_canary(
    tmp_path: Path,
) -> None:
    # The same setup with a plain connector: the second lookup lands on 127.0.0.1.
    seen = await rebind(tmp_path, guarded=False)
    assert isinstance(seen.outcome, FetchResult) and seen.outcome.body == b"canary"
    assert seen.lookups == ["rebind.test", "rebind.test"]
    assert seen.canary_connections == 1
