"""The API's shared resources (settings, SQL engine, Redis) and running SQL off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.engine import make_engine, reading, session_factory, transaction

T = TypeVar("T")

# Readiness probes must answer quickly even when a dependency hangs.
PROBE_TIMEOUT = 2.0
# Requests carry small JSON documents; anything bigger is refused with 413.
MAX_REQUEST_BYTES = 1024 * 1024
# The request line (so the URL), each header line, and the header count: aiohttp refuses more
# with a plain-text 400 before the app sees the request.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 100

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
SESSIONS = web.AppKey("sessions", sessionmaker[Session])
REDIS = web.AppKey("redis", aioredis.Redis)
# The data version (services/dataversion.py) read by the gate in its rate-limit round trip;
# absent when it could not be read.
DATA_VERSION = web.RequestKey("data_version", bytes)


async def resources(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: open the engine and the Redis client for the app's lifetime."""
    settings = app[SETTINGS]
    # Writes start with BEGIN IMMEDIATE on SQLite (a read-then-write transaction would fail
    # with "database is locked" when a worker writes in between); reads use `reading`.
    engine = make_engine(settings.database_url, immediate=True, role="api")
    app[ENGINE] = engine
    app[SESSIONS] = session_factory(engine)
    app[REDIS] = aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=PROBE_TIMEOUT,
        socket_timeout=PROBE_TIMEOUT,
    )
    try:
        yield
    finally:
        await app[REDIS].aclose()
        await asyncio.to_thread(engine.dispose)


async def read(request: web.Request, fn: Callable[[Session], T]) -> T:
    """Run ``fn`` with a read session in a worker thread (SQL never blocks the event loop)."""
    factory = request.app[SESSIONS]

    def work() -> T:
        with reading(factory) as session:
            return fn(session)

    return await asyncio.to_thread(work)


async def write(request: web.Request, fn: Callable[[Session], T]) -> T:
    """Run ``fn`` in one committed transaction in a worker thread."""
    factory = request.app[SESSIONS]

    def work() -> T:
        with transaction(factory) as session:
            return fn(session)

    return await asyncio.to_thread(work)
