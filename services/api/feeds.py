"""Feed handlers: list, inspect (health and item errors) and register sources."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.orm import Session

from services.api import params, schemas
from services.api.context import SETTINGS, read, write
from services.core.records import FeedRecord, ItemError
from services.db import feeds

RECENT_ITEM_ERRORS = 20

routes = web.RouteTableDef()


@routes.get("/v1/feeds")
async def list_feeds(request: web.Request) -> web.Response:
    """Feeds in id order."""
    query = request.query
    params.check_names(query, {"limit", "cursor"})
    limit = params.limit(query)
    after = params.feed_cursor(query)
    found = await read(request, lambda s: feeds.list_feeds(s, after_id=after, limit=limit + 1))
    items = found[:limit]
    next_cursor = params.encode_cursor("feeds", items[-1].id) if len(found) > limit else None
    return web.json_response(schemas.page([schemas.feed(f) for f in items], next_cursor))


@routes.get("/v1/feeds/{id}")
async def get_feed(request: web.Request) -> web.Response:
    params.check_names(request.query, ())
    feed_id = params.parse_id(request.match_info["id"])

    def work(session: Session) -> tuple[FeedRecord, list[ItemError]]:
        record = feeds.get_feed(session, feed_id)
        return record, feeds.item_errors(session, feed_id=feed_id, limit=RECENT_ITEM_ERRORS)

    record, errors = await read(request, work)
    return web.json_response(schemas.feed_detail(record, errors))


@routes.post("/v1/feeds")
async def create_feed(request: web.Request) -> web.Response:
    """Register an HTTP feed, due for polling at once. 409 when the URL is already known."""
    params.check_names(request.query, ())
    new = schemas.new_feed(schemas.parse_json_body(await request.read()))
    interval = max(1, round(request.app[SETTINGS].feed_interval))
    now = datetime.now(UTC)
    record = await write(
        request,
        lambda s: feeds.add_feed(
            s, url=new.url, kind="http", interval_seconds=interval, now=now, title=new.title
        ),
    )
    return web.json_response(
        schemas.feed_detail(record, []),
        status=201,
        headers={"Location": f"/v1/feeds/{record.id}"},
    )
