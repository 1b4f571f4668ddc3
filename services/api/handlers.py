"""Read handlers for articles and entities, and the health probes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.orm import Session

from services.api import params, schemas
from services.api.context import ENGINE, PROBE_TIMEOUT, REDIS, read
from services.api.errors import problem
from services.core.errors import NotFound
from services.db import articles, entity_reads, feeds, reads

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/v1/articles")
async def list_articles(request: web.Request) -> web.Response:
    """Newest first; ``entity`` filters must all match, ``feed`` limits to one source, ``q``
    keeps the articles a full-text query finds (in the same order, so cursors stay simple)."""
    query = request.query
    params.check_query(request, {"limit", "cursor", "entity", "feed", "q"}, repeatable={"entity"})
    limit = params.limit(query)
    cursor = params.article_cursor(query)
    refs = params.entity_refs(query)
    feed_id = params.optional_id(query, "feed")
    search = params.search_query(query)

    def work(session: Session) -> reads.Page[reads.ArticleSummary]:
        if feed_id is not None:
            feeds.get_feed(session, feed_id)
        groups = [_resolve_entity(session, ref) for ref in refs]
        return reads.list_articles(
            session, limit=limit, cursor=cursor, entity_ids=groups, feed_id=feed_id, search=search
        )

    found = await read(request, work)
    last = found.items[-1] if found.more else None
    next_cursor = params.encode_article_cursor(last.sort_at, last.id) if last else None
    return schemas.page(request, [schemas.article_summary(a) for a in found.items], next_cursor)


def _resolve_entity(session: Session, ref: str) -> list[int]:
    """Ids a reference denotes; an unknown id is a 404, an unknown name matches nothing."""
    ids = entity_reads.find_entity_ids(session, ref)
    if not ids and ref.isascii() and ref.isdigit():
        raise NotFound(f"no entity with id {ref}")
    return ids


@routes.get("/v1/articles/{id}")
async def get_article(request: web.Request) -> web.Response:
    params.check_query(request, ())
    article_id = params.parse_id(request.match_info["id"])
    try:
        article = await read(request, lambda s: reads.get_article(s, article_id))
    except NotFound:
        # Reprocessing merged this article into an older copy: its id lives on as a redirect.
        into = await read(request, lambda s: articles.merged_into(s, article_id))
        if into is None:
            raise
        raise web.HTTPPermanentRedirect(f"/v1/articles/{into}") from None
    return web.json_response(schemas.article_detail(article))


@routes.get("/v1/entities")
async def list_entities(request: web.Request) -> web.Response:
    """By article count, most mentioned first; ``type`` and name ``prefix`` filters."""
    query = request.query
    params.check_query(request, {"limit", "cursor", "type", "prefix"})
    limit = params.limit(query)
    cursor = params.entity_cursor(query)
    kind = params.entity_type(query)
    prefix = params.single(query, "prefix")
    found = await read(
        request,
        lambda s: entity_reads.list_entities(
            s, limit=limit, cursor=cursor, type=kind, prefix=prefix
        ),
    )
    last = found.items[-1] if found.more else None
    next_cursor = params.encode_cursor("entities", last.article_count, last.id) if last else None
    return schemas.page(request, [schemas.entity_summary(e) for e in found.items], next_cursor)


@routes.get("/v1/entities/{id}")
async def get_entity(request: web.Request) -> web.Response:
    params.check_query(request, ())
    entity_id = params.parse_id(request.match_info["id"])
    now = datetime.now(UTC)
    entity = await read(request, lambda s: entity_reads.get_entity(s, entity_id, now=now))
    return web.json_response(schemas.entity_detail(entity))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving; says nothing about dependencies."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 when SQL answers ``SELECT 1`` and Redis answers PING, else 503 naming the failures."""
    database, redis_state = await asyncio.gather(
        _probe("database", asyncio.to_thread(_select_one, request)),
        _probe("redis", _ping(request)),
    )
    checks = {"database": database, "redis": redis_state}
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return web.json_response({"status": "ok", "checks": checks})
    detail = "; ".join(f"{name}: {checks[name]}" for name in failed)
    return problem(503, "not_ready", detail, extra={"checks": checks})


def _select_one(request: web.Request) -> None:
    with request.app[ENGINE].connect() as conn:
        conn.execute(text("SELECT 1"))


async def _ping(request: web.Request) -> None:
    await request.app[REDIS].ping()


async def _probe(name: str, check: Awaitable[object]) -> str:
    """``ok``, or a short reason without connection details (URLs can hold passwords)."""
    try:
        await asyncio.wait_for(check, PROBE_TIMEOUT)
    except TimeoutError:
        log.warning("api.not_ready check=%s reason=timeout", name)
        return "timeout"
    except Exception as exc:
        log.warning("api.not_ready check=%s reason=%r", name, exc)
        return f"unreachable ({type(exc).__name__})"
    return "ok"
