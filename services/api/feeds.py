"""Feed handlers: list, inspect, register, change, delete, poll now, OPML export and import."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

from aiohttp import web
from sqlalchemy.orm import Session

from services.api import params, schemas
from services.api.context import SETTINGS, read, write
from services.api.errors import Unprocessable
from services.core.errors import Conflict, ParseError
from services.core.opml import OpmlFeed, OpmlWriter, parse_opml, screen
from services.core.records import FeedRecord, ItemError
from services.db import feeds

log = logging.getLogger(__name__)

RECENT_ITEM_ERRORS = 20
EXPORT_PAGE = 500
IMPORT_BATCH = 200
OPML_TYPE = "text/x-opml"

routes = web.RouteTableDef()


# The OPML routes come first: /v1/feeds.opml must never be read as a feed id.
@routes.get("/v1/feeds.opml")
async def export_opml(request: web.Request) -> web.StreamResponse:
    """Every HTTP feed as OPML 2.0, streamed page by page."""
    params.check_query(request, ())
    # The first page is read before the status line goes out, so a database failure is
    # still a proper problem response.
    found, last_id = await read(request, partial(_http_page, after_id=0))
    resp = web.StreamResponse(
        headers={"Content-Disposition": 'attachment; filename="newsdesk-feeds.opml"'}
    )
    resp.content_type = OPML_TYPE
    resp.charset = "utf-8"
    await resp.prepare(request)
    if request.method == "HEAD":  # the headers only: a body here would corrupt the stream
        return resp
    writer = OpmlWriter()
    try:
        await resp.write(writer.head(title="newsdesk feeds", now=datetime.now(UTC)).encode())
        while True:
            await resp.write(writer.feeds(found).encode())
            if last_id is None:
                break
            found, last_id = await read(request, partial(_http_page, after_id=last_id))
        await resp.write(writer.tail().encode())
    except Exception:
        # Too late for an error status: cut the connection so the client sees a broken
        # transfer instead of a well-framed but truncated document.
        log.exception("api.opml_export_failed")
        if request.transport is not None:
            request.transport.abort()
    return resp


def _http_page(session: Session, *, after_id: int) -> tuple[list[OpmlFeed], int | None]:
    """HTTP feeds after ``after_id`` and the id to continue from (None: no more rows)."""
    rows = feeds.list_feeds(session, after_id=after_id, limit=EXPORT_PAGE)
    found = [
        OpmlFeed(url=f.url, title=f.title, html_url=f.site_url) for f in rows if f.kind == "http"
    ]
    return found, rows[-1].id if len(rows) == EXPORT_PAGE else None


@routes.post("/v1/feeds.opml")
async def import_opml(request: web.Request) -> web.Response:
    """Register every feed of an OPML body (at most 1 MiB); known URLs are skipped."""
    params.check_query(request, ())
    try:
        entries = parse_opml(await request.read())
    except ParseError as exc:
        raise Unprocessable(str(exc), param="body", code=exc.code) from None
    interval = max(1, round(request.app[SETTINGS].feed_interval))
    now = datetime.now(UTC)
    seen: set[str] = set()
    created = existing = 0
    invalid: list[tuple[str, str]] = []
    for start in range(0, len(entries), IMPORT_BATCH):
        batch = screen(entries[start : start + IMPORT_BATCH], seen)
        added = await write(
            request,
            partial(
                feeds.add_feeds,
                entries=[(e.url, e.title) for e in batch.new],
                interval_seconds=interval,
                now=now,
            ),
        )
        created += added
        existing += batch.repeated + len(batch.new) - added
        invalid += batch.invalid
    log.info("feeds.imported created=%d existing=%d invalid=%d", created, existing, len(invalid))
    return web.json_response(schemas.opml_import(created, existing, invalid))


@routes.get("/v1/feeds")
async def list_feeds(request: web.Request) -> web.Response:
    """Feeds in id order."""
    query = request.query
    params.check_query(request, {"limit", "cursor"})
    limit = params.limit(query)
    after = params.feed_cursor(query)
    found = await read(request, lambda s: feeds.list_feeds(s, after_id=after, limit=limit + 1))
    items = found[:limit]
    next_cursor = params.encode_cursor("feeds", items[-1].id) if len(found) > limit else None
    return schemas.page(request, [schemas.feed(f) for f in items], next_cursor)


def _with_errors(session: Session, record: FeedRecord) -> tuple[FeedRecord, list[ItemError]]:
    return record, feeds.item_errors(session, feed_id=record.id, limit=RECENT_ITEM_ERRORS)


@routes.get("/v1/feeds/{id}")
async def get_feed(request: web.Request) -> web.Response:
    """A feed with everything an operator needs: state, schedule, errors, recent item errors."""
    params.check_query(request, ())
    feed_id = params.parse_id(request.match_info["id"])
    record, errors = await read(request, lambda s: _with_errors(s, feeds.get_feed(s, feed_id)))
    return web.json_response(schemas.feed_detail(record, errors))


@routes.post("/v1/feeds")
async def create_feed(request: web.Request) -> web.Response:
    """Register an HTTP feed, due for polling at once. 409 when the URL is already known."""
    params.check_query(request, ())
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


@routes.patch("/v1/feeds/{id}")
async def patch_feed(request: web.Request) -> web.Response:
    """Change ``title``, ``interval`` (null: adaptive), ``enabled`` or ``fulltext``; returns
    the feed."""
    params.check_query(request, ())
    feed_id = params.parse_id(request.match_info["id"])
    settings = request.app[SETTINGS]
    changes = schemas.feed_patch(
        schemas.parse_json_body(await request.read()),
        min_interval=settings.feed_min_interval,
        max_interval=settings.feed_max_interval,
    )
    now = datetime.now(UTC)
    record, errors = await write(
        request, lambda s: _with_errors(s, feeds.update_feed(s, feed_id, now=now, **changes))
    )
    return web.json_response(schemas.feed_detail(record, errors))


@routes.delete("/v1/feeds/{id}")
async def delete_feed(request: web.Request) -> web.Response:
    """Forget a feed and its items (its articles stay); the folder source is refused (409)."""
    params.check_query(request, ())
    feed_id = params.parse_id(request.match_info["id"])
    await write(request, partial(_delete, feed_id=feed_id))
    return web.Response(status=204)


def _delete(session: Session, *, feed_id: int) -> None:
    if feeds.get_feed(session, feed_id).kind == "folder":
        raise Conflict(
            f"feed {feed_id} is the folder source (NEWSDESK_SEEDS_DIR) and cannot be deleted: "
            "the poller would register it again. Disable it instead (enabled: false), or "
            "set NEWSDESK_SEEDS_DIR to an empty value.",
            code="folder_source",
        )
    feeds.delete_feed(session, feed_id)


@routes.post("/v1/feeds/{id}/poll")
async def poll_feed(request: web.Request) -> web.Response:
    """Make a feed due now (202: the poller picks it up on its next tick); 409 if disabled."""
    params.check_query(request, ())
    feed_id = params.parse_id(request.match_info["id"])
    now = datetime.now(UTC)
    record, errors = await write(
        request, lambda s: _with_errors(s, feeds.poll_now(s, feed_id, now=now))
    )
    return web.json_response(schemas.feed_detail(record, errors), status=202)
