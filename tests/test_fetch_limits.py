"""Fetcher limits on real loopback servers: bombs, endless and slow bodies, redirects, schemes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.config import Settings
from services.core.errors import FetchError
from services.fetch import Fetcher, FetchResult, HTTPStatusError
from tests.test_ssrf import Canary, RebindingResolver, make_settings, start_canary

MIB = 1024 * 1024
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def loopback_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, fetch_allow=("127.0.0.0/8",), **overrides)


async def fetch_error(settings: Settings, url: str, **kwargs: Any) -> FetchError:
    async with Fetcher(settings, **kwargs) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url)
    return info.value


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that runs ``script`` per connection (for broken HTTP)."""

    script: Script
    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await reader.readuntil(b"\r\n\r\n")
                await self.script(reader, writer)
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    raw = RawServer(script)
    raw.server = await asyncio.start_server(raw._handle, "127.0.0.1", 0)
    raw.port = raw.server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        raw.server.close()
        for task in raw.tasks:
            task.cancel()
        await raw.server.wait_closed()


@contextlib.asynccontextmanager
async def app_server(routes: list[web.RouteDef]) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def url_of(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- compression bombs --------------------------------------------------------------------------


@dataclass
class BombStats:
    compressed_sent: int = 0
    finished: bool = False


def bomb_route(wbits: int, encoding: str, stats: BombStats) -> web.RouteDef:
    """1 GiB of zeros, compressed while it is sent (never held whole, nor by the server)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Encoding": encoding})
        response.enable_chunked_encoding()
        await response.prepare(request)
        compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
        zeros = bytes(MIB)
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):
                # A sync flush per MiB keeps bytes flowing (zlib would hold ~4 MiB of zeros
                # per block) and the write yields, as the client shares this event loop.
                chunk = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
                await response.write(chunk)
                stats.compressed_sent += len(chunk)
                await asyncio.sleep(0)
            await response.write(compressor.flush())
            stats.finished = True
        return response

    return web.get("/bomb", handler)


@pytest.mark.parametrize(
    ("wbits", "encoding"), [(31, "gzip"), (15, "deflate"), (-15, "deflate")], ids=str
)
async def test_compression_bomb_stops_at_the_decompressed_cap(
    tmp_path: Path, wbits: int, encoding: str
) -> None:
    stats = BombStats()
    settings = loopback_settings(tmp_path, max_body_bytes=MIB)
    rss_before = max_rss_mib()
    started = time.monotonic()
    async with app_server([bomb_route(wbits, encoding, stats)]) as server:
        error = await fetch_error(settings, url_of(server, "/bomb"))
    elapsed = time.monotonic() - started
    assert error.code == "too_large" and "decompressed" in str(error)
    assert elapsed < 3
    assert not stats.finished and stats.compressed_sent < 2 * MIB
    assert max_rss_mib() - rss_before < 200


async def test_brotli_body_is_never_inflated_without_a_cap(tmp_path: Path) -> None:
    # aiohttp inflates br only when a Brotli package is installed, and then through the same
    # bounded steps as gzip; without one it refuses the body. Either way nothing unbounded.
    async def endless_br(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        block = os.urandom(64 * 1024)
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()

    settings = loopback_settings(tmp_path, max_body_bytes=MIB)
    started = time.monotonic()
    async with raw_server(endless_br) as raw:
        error = await fetch_error(settings, raw.url)
    assert error.code in {"bad_response", "too_large"}, str(error)
    assert time.monotonic() - started < 3


# -- endless, lying and huge bodies -------------------------------------------------------------


async def test_endless_chunked_body_is_too_large(tmp_path: Path) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(b"x" * 65536)
        return response

    settings = loopback_settings(tmp_path, max_body_bytes=100_000)
    started = time.monotonic()
    async with app_server([web.get("/endless", endless)]) as server:
        error = await fetch_error(settings, url_of(server, "/endless"))
    assert error.code == "too_large" and "declared" not in str(error)
    assert time.monotonic() - started < 3


async def test_huge_declared_length_is_refused_before_reading(tmp_path: Path) -> None:
    async def declares_10_gib(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nabc" % (10 * 1024**3))
        await writer.drain()
        await asyncio.sleep(30)  # never sends the body: reading it would time out

    started = time.monotonic()
    async with raw_server(declares_10_gib) as raw:
        error = await fetch_error(loopback_settings(tmp_path), raw.url)
    assert error.code == "too_large" and "declared" in str(error)
    assert time.monotonic() - started < 1


async def test_lying_short_content_length_reads_only_what_was_declared(tmp_path: Path) -> None:
    async def lies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * (8 * MIB))
        await writer.drain()

    started = time.monotonic()
    async with raw_server(lies) as raw, Fetcher(loopback_settings(tmp_path)) as fetcher:
        try:
            outcome: FetchResult | FetchError = await fetcher.fetch(raw.url)
        except FetchError as exc:
            outcome = exc
    # aiohttp either stops at the declared length or rejects the bytes that follow it as a
    # malformed next response; it never reads them into the body.
    if isinstance(outcome, FetchResult):
        assert outcome.body == b"y" * 100
    else:
        assert outcome.code == "bad_response"
        assert len(str(outcome)) < 400  # aiohttp quotes the bad line; the stored detail is cut
    assert time.monotonic() - started < 1


# -- slow servers -------------------------------------------------------------------------------


async def dribble_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1)


async def dribble_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        writer.write(b"z")
        await writer.drain()
        await asyncio.sleep(1)


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize("script", [dribble_headers, dribble_body, never_answers])
async def test_slow_servers_time_out_within_the_configured_timeout(
    tmp_path: Path, script: Script
) -> None:
    settings = loopback_settings(tmp_path, http_timeout=1.0)
    started = time.monotonic()
    async with raw_server(script) as raw:
        error = await fetch_error(settings, raw.url)
    elapsed = time.monotonic() - started
    assert error.code == "timeout", str(error)
    assert 0.9 < elapsed < 1.6
    assert raw.connections == 1


# -- redirects ----------------------------------------------------------------------------------


@pytest.fixture
async def hops() -> AsyncIterator[tuple[TestServer, list[str]]]:
    seen: list[str] = []

    async def hop(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(text="arrived")
        raise web.HTTPFound(f"/r/{left - 1}")

    async def loop(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        raise web.HTTPFound(str(request.url))

    async with app_server([web.get("/r/{n}", hop), web.get("/loop", loop)]) as server:
        yield server, seen


async def test_five_redirects_are_followed_six_are_not(
    tmp_path: Path, hops: tuple[TestServer, list[str]]
) -> None:
    server, seen = hops
    settings = loopback_settings(tmp_path)
    async with Fetcher(settings) as fetcher:
        result = await fetcher.fetch(url_of(server, "/r/5"))
    assert result.body == b"arrived" and result.final_url == url_of(server, "/r/0")
    seen.clear()
    error = await fetch_error(settings, url_of(server, "/r/6"))
    assert error.code == "too_many_redirects"
    assert seen == [f"/r/{n}" for n in range(6, 0, -1)]  # the 7th URL is never requested


async def test_redirect_loop_stops(tmp_path: Path, hops: tuple[TestServer, list[str]]) -> None:
    server, seen = hops
    error = await fetch_error(loopback_settings(tmp_path), url_of(server, "/loop"))
    assert error.code == "too_many_redirects" and len(seen) == 6


# -- schemes and environment --------------------------------------------------------------------


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    server = await start_canary()
    yield server
    await server.close()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://x",
        "gopher://x",
        "data:,x",
        "feed://x/rss",
        "ftp://127.0.0.1:{port}/",
        "gopher://127.0.0.1:{port}/_GET%20/",
        "/etc/passwd",
    ],
)
async def test_non_http_schemes_are_refused_without_a_connection(
    tmp_path: Path, canary: Canary, url: str
) -> None:
    resolver = RebindingResolver(["127.0.0.1"])
    error = await fetch_error(
        loopback_settings(tmp_path), url.format(port=canary.port), resolver=resolver
    )
    assert error.code == "bad_scheme"
    assert resolver.calls == [] and canary.connections == 0


async def test_proxy_environment_is_ignored(
    tmp_path: Path, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{canary.port}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="direct")

    async with (
        app_server([web.get("/", ok)]) as server,
        Fetcher(loopback_settings(tmp_path)) as fetcher,
    ):
        result = await fetcher.fetch(url_of(server, "/"))
    assert result.body == b"direct" and canary.connections == 0


# -- Retry-After --------------------------------------------------------------------------------


async def test_retry_after_is_parsed_in_seconds(tmp_path: Path) -> None:
    server_date = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # a clock far from ours

    def http_date(when: datetime) -> str:
        return format_datetime(when, usegmt=True)

    async def limited(request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "120"})

    async def unavailable(request: web.Request) -> web.StreamResponse:
        later = http_date(server_date + timedelta(seconds=90))
        return web.Response(
            status=503, headers={"Retry-After": later, "Date": http_date(server_date)}
        )

    async def fine(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok", headers={"Retry-After": "-3"})

    routes = [web.get("/429", limited), web.get("/503", unavailable), web.get("/200", fine)]
    settings = loopback_settings(tmp_path)
    async with app_server(routes) as server, Fetcher(settings) as fetcher:
        for path, seconds in (("/429", 120.0), ("/503", 90.0)):
            with pytest.raises(HTTPStatusError) as info:
                await fetcher.fetch(url_of(server, path))
            assert info.value.retry_after_seconds == seconds
            assert info.value.code == f"http_{path[1:]}"
        result = await fetcher.fetch(url_of(server, "/200"))
    assert info.value.retry_after is not None
    assert result.retry_after_seconds == 0.0
