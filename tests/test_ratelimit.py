"""Per-key and per-address budgets in real Redis, shared by API processes, failing open."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.ratelimit import KEY_PREFIX, RateLimiter
from services.config import Settings
from services.db.apikeys import create_key

Client = TestClient[web.Request, web.Application]
PROBLEM = "application/problem+json"


def make_key(db: sessionmaker[Session], *scopes: str) -> dict[str, str]:
    with db.begin() as session:
        token = create_key(session, name="t", scopes=scopes, now=datetime.now(UTC)).token
    return {"Authorization": f"Bearer {token}"}


async def started(settings: Settings) -> Client:
    client: Client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
def tight(settings: Settings) -> Settings:
    """Three requests per one-second window."""
    return settings.with_overrides(rate_limit=3, rate_window=1.0)


async def test_a_key_over_budget_gets_429_then_is_allowed_after_the_window(
    tight: Settings, db: sessionmaker[Session]
) -> None:
    first, second = make_key(db, "read", "write"), make_key(db, "read")
    client = await started(tight)
    try:
        for _ in range(3):
            assert (await client.get("/v1/articles", headers=first)).status == 200
        resp = await client.get("/v1/articles", headers=first)
        assert resp.status == 429 and resp.content_type == PROBLEM
        assert resp.headers["Retry-After"] == "1"
        body = await resp.json(content_type=PROBLEM)
        assert body["type"] == "urn:newsdesk:problem:rate_limited"
        assert body["limit"] == 3 and body["window"] == 1.0
        # Writes spend the same budget; other keys have their own.
        assert (await client.post("/v1/feeds", json={}, headers=first)).status == 429
        assert (await client.get("/v1/articles", headers=second)).status == 200
        # Probes are never limited.
        assert (await client.get("/healthz")).status == 200

        await asyncio.sleep(1.05)
        assert (await client.get("/v1/articles", headers=first)).status == 200
    finally:
        await client.close()


async def test_the_budget_is_shared_by_api_processes(
    tight: Settings, db: sessionmaker[Session]
) -> None:
    key = make_key(db, "read")
    one, two = await started(tight), await started(tight)
    try:
        statuses = [(await c.get("/v1/entities", headers=key)).status for c in (one, two, one, two)]
        assert statuses == [200, 200, 200, 429]
    finally:
        await one.close()
        await two.close()


async def test_anonymous_public_reads_are_limited_per_address(
    tight: Settings, db: sessionmaker[Session]
) -> None:
    client = await started(tight.with_overrides(public_reads=True))
    try:
        statuses = [(await client.get("/v1/articles")).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        # A key has its own budget, not the address's.
        assert (await client.get("/v1/articles", headers=make_key(db, "read"))).status == 200
    finally:
        await client.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_redis_down_fails_open_with_one_log_line(
    tight: Settings, db: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    key = make_key(db, "read")
    down = tight.with_overrides(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    client = await started(down)
    try:
        with caplog.at_level(logging.WARNING, logger="services.api.ratelimit"):
            statuses = [(await client.get("/v1/articles", headers=key)).status for _ in range(6)]
    finally:
        await client.close()
    assert statuses == [200] * 6
    assert caplog.text.count("api.ratelimit_unavailable") == 1


async def test_limiter_window_in_redis(settings: Settings, redis_conn: redis.Redis) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        limiter = RateLimiter(client, limit=2, window=0.3)
        verdicts = [await limiter.hit("key:7") for _ in range(3)]
        assert [v.allowed for v in verdicts] == [True, True, False]
        assert [v.remaining for v in verdicts] == [1, 0, 0]
        assert verdicts[2].reset_after == 1  # whole seconds, never 0
        ttl = redis_conn.pttl(KEY_PREFIX + "key:7")
        assert 0 < ttl <= 300  # the counter expires with its window
        await asyncio.sleep(0.35)
        assert (await limiter.hit("key:7")).allowed
        assert (await RateLimiter(client, limit=0, window=1).hit("key:7")).allowed
    finally:
        await client.aclose()
