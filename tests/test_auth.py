"""API keys over real HTTP: every route's scope, bad and revoked keys, public reads, limits."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.auth import GATE, OPEN_PATHS, SAFE_METHODS
from services.api.context import MAX_REQUEST_BYTES
from services.config import Settings
from services.db.apikeys import create_key, revoke_key
from services.db.models import ApiKey
from services.supervisor import ensure_first_key

Client = TestClient[web.Request, web.Application]
PROBLEM = "application/problem+json"


def make_key(db: sessionmaker[Session], *scopes: str, name: str = "test") -> str:
    with db.begin() as session:
        return create_key(session, name=name, scopes=scopes, now=datetime.now(UTC)).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def started(app: web.Application) -> Client:
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def anon(settings: Settings) -> AsyncIterator[Client]:
    """The API with authentication on, and a client that sends no key by itself."""
    client = await started(create_app(settings))
    yield client
    await client.close()


def routes(app: web.Application, *, writes: bool) -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every route the app registered: writes or reads."""
    for route in app.router.routes():
        if route.method == "*" or (route.method in SAFE_METHODS) == writes:
            continue
        assert route.resource is not None
        yield route.method, re.sub(r"\{[^}]*\}", "1", route.resource.canonical)


async def problem_of(resp: object, status: int) -> dict[str, object]:
    from aiohttp import ClientResponse

    assert isinstance(resp, ClientResponse)
    assert resp.status == status, await resp.text()
    if resp.method == "HEAD":
        return {}
    assert resp.content_type == PROBLEM
    body: dict[str, object] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    return body


# --- every route -------------------------------------------------------------------------------


async def test_every_write_route_needs_the_write_scope(
    anon: Client, db: sessionmaker[Session]
) -> None:
    found = sorted(set(routes(anon.app, writes=True)))
    # The walk sees the routes: a broken enumeration must not pass vacuously.
    assert ("POST", "/v1/feeds") in found and ("DELETE", "/v1/subscriptions/1") in found
    assert {m for m, _ in found} >= {"POST", "PATCH", "DELETE"}
    reader, writer = make_key(db, "read"), make_key(db, "write")
    for method, path in found:
        resp = await anon.request(method, path)
        body = await problem_of(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert body["type"] == "urn:newsdesk:problem:unauthorized"

        resp = await anon.request(method, path, headers=bearer(reader))
        body = await problem_of(resp, 403)
        assert body["required_scope"] == "write" and "`write`" in str(body["detail"])
        assert 'scope="write"' in resp.headers["WWW-Authenticate"]

        resp = await anon.request(method, path, headers=bearer(writer))
        assert resp.status not in (401, 403), (method, path, await resp.text())


async def test_every_read_route_needs_the_read_scope_and_probes_are_open(
    anon: Client, db: sessionmaker[Session]
) -> None:
    found = sorted(set(routes(anon.app, writes=False)))
    assert ("GET", "/v1/articles") in found and ("HEAD", "/v1/articles") in found
    reader, writer = make_key(db, "read"), make_key(db, "write")
    for method, path in found:
        if path in OPEN_PATHS:
            resp = await anon.request(method, path)
            assert resp.status not in (401, 403), (method, path)
            continue
        await problem_of(await anon.request(method, path), 401)
        await problem_of(await anon.request(method, path, headers=bearer(writer)), 403)
        if method == "HEAD":
            continue  # the GET twin below is admitted the same way
        resp = await anon.request(method, path, headers=bearer(reader))
        assert resp.status not in (401, 403), (method, path, await resp.text())
    assert (await anon.get("/healthz")).status == 200


# --- bad keys ---------------------------------------------------------------------------------


async def test_wrong_malformed_and_near_miss_keys_are_401(
    anon: Client, db: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    token = make_key(db, "read", "write")
    last = token[-1]
    near_miss = token[:-1] + ("A" if last != "A" else "B")
    other = "nd_" + token[3:11] + "x" * 43  # right prefix, wrong secret
    headers = [
        bearer(near_miss),
        bearer(other),
        bearer("nd_short"),
        bearer(""),
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
    ]
    with caplog.at_level(logging.INFO, logger="services.api.auth"):
        for header in headers:
            resp = await anon.get("/v1/articles", headers=header)
            body = await problem_of(resp, 401)
            assert body["type"] == "urn:newsdesk:problem:invalid_key", header
            assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
            assert body["param"] == "Authorization"
    # Refusals are logged with the non-secret prefix, never the token.
    assert token[:11] in caplog.text
    assert token[11:] not in caplog.text and near_miss[11:] not in caplog.text
    assert (await anon.get("/v1/articles", headers=bearer(token))).status == 200
    assert (
        await anon.get("/v1/articles", headers={"authorization": f"bearer {token}"})
    ).status == 200


async def test_revoked_key_is_refused_at_once_with_no_cache(
    anon: Client, db: sessionmaker[Session]
) -> None:
    token = make_key(db, "read", "write")
    assert (await anon.get("/v1/feeds", headers=bearer(token))).status == 200
    with db.begin() as session:
        key_id = session.scalars(select(ApiKey.id)).one()
        revoke_key(session, key_id, now=datetime.now(UTC))
    body = await problem_of(await anon.get("/v1/feeds", headers=bearer(token)), 401)
    assert "revoked" in str(body["detail"])
    resp = await anon.post("/v1/feeds", json={"url": "https://a.test/"}, headers=bearer(token))
    await problem_of(resp, 401)


async def test_revoke_takes_effect_when_the_cached_key_expires(
    settings: Settings, db: sessionmaker[Session]
) -> None:
    client = await started(create_app(settings.with_overrides(auth_cache=5.0)))
    try:
        now = [1000.0]
        client.app[GATE].clock = lambda: now[0]
        token = make_key(db, "read")
        assert (await client.get("/v1/articles", headers=bearer(token))).status == 200
        with db.begin() as session:
            revoke_key(session, session.scalars(select(ApiKey.id)).one(), now=datetime.now(UTC))
        now[0] += 4.9  # still trusted from the cache
        assert (await client.get("/v1/articles", headers=bearer(token))).status == 200
        now[0] += 0.2
        await problem_of(await client.get("/v1/articles", headers=bearer(token)), 401)
    finally:
        await client.close()


# --- what is stored ---------------------------------------------------------------------------


async def test_only_the_hash_is_stored_and_use_is_recorded_once_a_minute(
    anon: Client, db: sessionmaker[Session]
) -> None:
    token = make_key(db, "read")
    with db() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.prefix == token[:11] and row.last_used_at is None
        stored = " ".join(
            str(v) for r in session.execute(text("SELECT * FROM api_keys")) for v in r
        )
    assert token not in stored and token[11:] not in stored

    assert (await anon.get("/v1/articles", headers=bearer(token))).status == 200
    with db() as session:
        first = session.scalars(select(ApiKey.last_used_at)).one()
    assert first is not None and abs((datetime.now(UTC) - first).total_seconds()) < 30
    for _ in range(3):
        assert (await anon.get("/v1/articles", headers=bearer(token))).status == 200
    with db() as session:
        assert session.scalars(select(ApiKey.last_used_at)).one() == first


# --- operator switches ------------------------------------------------------------------------


async def test_public_reads_open_gets_only(settings: Settings, db: sessionmaker[Session]) -> None:
    client = await started(create_app(settings.with_overrides(public_reads=True)))
    try:
        assert (await client.get("/v1/articles")).status == 200
        assert (await client.get("/v1/entities")).status == 200
        resp = await client.post("/v1/feeds", json={"url": "https://a.test/rss"})
        await problem_of(resp, 401)
        # A key sent with a public read must still be a valid one.
        await problem_of(await client.get("/v1/articles", headers=bearer("nd_" + "x" * 51)), 401)
        reader = make_key(db, "read")
        resp = await client.post(
            "/v1/feeds", json={"url": "https://a.test/"}, headers=bearer(reader)
        )
        await problem_of(resp, 403)
    finally:
        await client.close()


async def test_auth_off_admits_everyone(settings: Settings) -> None:
    client = await started(create_app(settings.with_overrides(auth=False)))
    try:
        assert (await client.get("/v1/articles")).status == 200
        resp = await client.post("/v1/feeds", json={"url": "https://a.test/rss"})
        assert resp.status == 201, await resp.text()
    finally:
        await client.close()


def test_up_creates_one_first_key_and_only_when_auth_is_on(
    settings: Settings, db: sessionmaker[Session]
) -> None:
    assert ensure_first_key(settings.with_overrides(auth=False)) is None
    token = ensure_first_key(settings)
    assert token is not None and token.startswith("nd_")
    assert ensure_first_key(settings) is None
    with db() as session:
        (row,) = session.scalars(select(ApiKey)).all()
    assert sorted(row.scopes) == ["read", "write"] and row.prefix == token[:11]


# --- request size -----------------------------------------------------------------------------


async def test_oversized_bodies_are_413_on_every_write_route(anon: Client, api_token: str) -> None:
    big = b"x" * (MAX_REQUEST_BYTES + 1)
    found = sorted(set(routes(anon.app, writes=True)))
    for method, path in found:
        for headers in ({}, bearer(api_token)):
            resp = await anon.request(method, path, data=big, headers=headers)
            body = await problem_of(resp, 413)
            assert body["type"] == "urn:newsdesk:problem:too_large", (method, path)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"y" * (MAX_REQUEST_BYTES // 2)

        # No Content-Length: measured as it arrives, also on routes that never read a body.
        resp = await anon.request(method, path, data=chunks(), headers=bearer(api_token))
        await problem_of(resp, 413)
    resp = await anon.post("/v1/feeds", data=b"x" * MAX_REQUEST_BYTES, headers=bearer(api_token))
    assert resp.status == 400  # at the limit: read, and refused as bad JSON


async def raw_status(client: Client, request: bytes) -> int:
    """Send raw bytes to the test server; the status code of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1])


async def test_long_urls_and_headers_are_refused(anon: Client, api_token: str) -> None:
    auth = f"Authorization: Bearer {api_token}\r\n".encode()
    ok = b"GET /v1/articles HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n"
    assert await raw_status(anon, ok) == 200
    long_url = b"GET /v1/articles?cursor=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await raw_status(anon, long_url) == 400
    long_header = b"GET /v1/articles HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert await raw_status(anon, long_header) == 400
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(200)
    )
    assert await raw_status(anon, many + b"\r\n") == 400
