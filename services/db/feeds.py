"""Feeds repository: sources, their polling state, and the items they have produced."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.records import FULLTEXT_MODES, FeedRecord, ItemError
from services.db.events import add_event
from services.db.models import Feed, Sighting
from services.db.upsert import insert_for, insert_ignore

MAX_BACKOFF = timedelta(hours=24)


TITLE_MAX = 1000  # characters of a feed's title kept


def stored_title(title: str | None) -> str | None:
    """A feed's title as a poll stores it."""
    return title[:TITLE_MAX] if title else None


def key_hash(item_key: str) -> str:
    return hashlib.sha256(item_key.encode("utf-8", "surrogatepass")).hexdigest()


def to_record(row: Feed) -> FeedRecord:
    return FeedRecord(
        id=row.id,
        url=row.url,
        kind=row.kind,
        title=row.title,
        site_url=row.site_url,
        etag=row.etag,
        last_modified=row.last_modified,
        body_hash=row.body_hash,
        interval_seconds=row.interval_seconds,
        next_poll_at=row.next_poll_at,
        last_polled_at=row.last_polled_at,
        last_success_at=row.last_success_at,
        last_status=row.last_status,
        error_count=row.error_count,
        last_error_code=row.last_error_code,
        last_error_detail=row.last_error_detail,
        disabled_at=row.disabled_at,
        created_at=row.created_at,
        disabled_reason=row.disabled_reason,
        interval_override=row.interval_override,
        ttl_seconds=row.ttl_seconds,
        first_error_at=row.first_error_at,
        throttled_until=row.throttled_until,
        moved_from=row.moved_from,
        fulltext=row.fulltext,
    )


def add_feed(
    session: Session, *, url: str, kind: str, interval_seconds: int, now: datetime,
    title: str | None = None,
) -> FeedRecord:  # fmt: skip
    """Register a source, due at once. Raises Conflict when the URL is already registered."""
    row = insert_ignore(
        session,
        Feed,
        {
            "url": url, "kind": kind, "title": title, "interval_seconds": interval_seconds,
            "next_poll_at": now, "error_count": 0, "created_at": now, "updated_at": now,
        },
        returning=[Feed.id],
    )  # fmt: skip
    if row is None:
        raise Conflict(f"a feed with URL {url!r} already exists")
    return get_feed(session, row[0])


def ensure_feed(
    session: Session, *, url: str, kind: str, interval_seconds: int, now: datetime
) -> FeedRecord:
    """The feed with ``url``, created when missing (idempotent, safe under concurrency)."""
    found = session.scalars(select(Feed).where(Feed.url == url)).first()
    if found is not None:
        return to_record(found)
    try:
        with session.begin_nested():
            return add_feed(session, url=url, kind=kind, interval_seconds=interval_seconds, now=now)
    except Conflict:
        return to_record(session.scalars(select(Feed).where(Feed.url == url)).one())


def get_feed(session: Session, feed_id: int) -> FeedRecord:
    row = session.get(Feed, feed_id)
    if row is None:
        raise NotFound(f"no feed with id {feed_id}")
    return to_record(row)


def list_feeds(session: Session, *, after_id: int = 0, limit: int = 100) -> list[FeedRecord]:
    """Feeds in id order, starting after ``after_id`` (keyset pagination)."""
    rows = session.scalars(select(Feed).where(Feed.id > after_id).order_by(Feed.id).limit(limit))
    return [to_record(r) for r in rows]


def claim_due_feeds(
    session: Session, *, kind: str, now: datetime, limit: int, lease: timedelta
) -> list[FeedRecord]:
    """Take up to ``limit`` due feeds and push their next poll past ``lease``.

    The lease stops a second poller (or an overlapping cycle) from taking the same feeds;
    on PostgreSQL ``FOR UPDATE SKIP LOCKED`` keeps two pollers from blocking on each other.
    """
    stmt = (
        select(Feed)
        .where(Feed.kind == kind, Feed.disabled_at.is_(None), Feed.next_poll_at <= now)
        .order_by(Feed.next_poll_at, Feed.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    rows = list(session.scalars(stmt))
    for row in rows:
        row.next_poll_at = now + lease
    session.flush()
    return [to_record(r) for r in rows]


def _row(session: Session, feed_id: int, *, lock: bool = False) -> Feed:
    row = session.get(Feed, feed_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"no feed with id {feed_id}")
    return row


def _success_statement() -> Update:
    """One UPDATE for every successful poll: optional fields keep their value when None.

    Built once, so SQLAlchemy compiles it once; the poller's hot path is this statement.
    """
    t = Feed.metadata.tables["feeds"]
    keep = ("interval_seconds", "etag", "last_modified", "body_hash", "ttl_seconds", "title",
            "site_url")  # fmt: skip
    values: dict[str, Any] = {
        name: func.coalesce(bindparam(f"p_{name}", type_=t.c[name].type), t.c[name])
        for name in keep
    }
    for name in ("last_polled_at", "last_success_at", "updated_at"):
        values[name] = bindparam("p_now", type_=t.c[name].type)
    values |= {
        "last_status": bindparam("p_status", type_=t.c.last_status.type),
        "next_poll_at": bindparam("p_next", type_=t.c.next_poll_at.type),
        "error_count": 0, "first_error_at": None, "throttled_until": None,
        "last_error_code": None, "last_error_detail": None,
    }  # fmt: skip
    return update(t).where(t.c.id == bindparam("p_id")).values(values)


SUCCESS = _success_statement()
PLAIN_SUCCESS = SUCCESS.where(Feed.error_count == 0)


def record_success(
    session: Session, *, feed_id: int, now: datetime, status: int | None,
    next_poll_at: datetime, interval_seconds: int | None = None,
    etag: str | None = None, last_modified: str | None = None, body_hash: str | None = None,
    title: str | None = None, site_url: str | None = None, ttl_seconds: int | None = None,
) -> int | None:  # fmt: skip
    """A poll that worked (200 or 304): clear errors and throttling, keep validators.

    Returns the id of the ``feed.recovered`` event when this success ends an error streak.
    """
    params = {
        "p_id": feed_id, "p_now": now, "p_status": status, "p_next": next_poll_at,
        "p_interval_seconds": interval_seconds, "p_etag": etag,
        "p_last_modified": last_modified, "p_body_hash": body_hash, "p_ttl_seconds": ttl_seconds,
        "p_title": stored_title(title),
        "p_site_url": site_url[:2048] if site_url else None,
    }  # fmt: skip
    # The common case, a feed without errors, is one UPDATE and no read.
    if session.connection().execute(PLAIN_SUCCESS, params).rowcount == 1:
        return None
    row = _row(session, feed_id)
    recovered = add_event(
        session, type="feed.recovered", now=now, feed_id=feed_id,
        payload={
            "feed": {"id": row.id, "url": row.url, "title": row.title},
            "errors": row.error_count, "last_error_code": row.last_error_code,
            "failing_since": row.first_error_at.isoformat() if row.first_error_at else None,
        },
    )  # fmt: skip
    session.connection().execute(SUCCESS, params)
    session.expire(row)
    return recovered


def record_error(
    session: Session, *, feed_id: int, now: datetime, code: str, detail: str,
    status: int | None = None, next_poll_at: datetime | None = None,
    disable_reason: str | None = None,
) -> int | None:  # fmt: skip
    """A poll that failed: count it and keep the code and detail.

    With ``disable_reason`` (``gone`` for a 410, ``outage`` after a sustained outage) the feed
    is disabled and a ``feed.error`` event is written; its id is returned. Without
    ``next_poll_at`` the next poll backs off exponentially.
    """
    row = _row(session, feed_id)
    row.error_count += 1
    row.first_error_at = row.first_error_at or now
    row.last_polled_at = now
    row.last_status = status
    row.last_error_code = code
    row.last_error_detail = detail[:2000]
    if next_poll_at is None:
        backoff = timedelta(seconds=row.interval_seconds) * (2 ** min(row.error_count - 1, 10))
        next_poll_at = now + min(backoff, MAX_BACKOFF)
    row.next_poll_at = next_poll_at
    if disable_reason is None:
        return None
    row.disabled_at = now
    row.disabled_reason = disable_reason
    return add_event(
        session, type="feed.error", now=now, feed_id=feed_id,
        payload={
            "feed": {"id": row.id, "url": row.url, "title": row.title},
            "reason": disable_reason, "error_code": code, "detail": detail[:500],
            "errors": row.error_count, "failing_since": row.first_error_at.isoformat(),
            "disabled": True,
        },
    )  # fmt: skip


def record_throttled(
    session: Session, *, feed_id: int, now: datetime, status: int, until: datetime,
    detail: str,
) -> None:  # fmt: skip
    """The server asked us to slow down (429/503): not a failure, just wait until ``until``."""
    row = _row(session, feed_id)
    row.last_polled_at = now
    row.last_status = status
    row.throttled_until = until
    row.last_error_detail = detail[:2000]
    row.next_poll_at = until


def record_moved(session: Session, *, feed_id: int, new_url: str, now: datetime) -> bool:
    """Follow a permanent redirect (301/308) by storing the new URL; False if it is taken."""
    row = _row(session, feed_id)
    if row.url == new_url:
        return True
    taken = session.scalar(select(Feed.id).where(Feed.url == new_url, Feed.id != feed_id))
    if taken is not None:
        return False
    row.moved_from = row.url
    row.url = new_url
    row.updated_at = now
    return True


def schedule(session: Session, *, feed_id: int, when: datetime) -> None:
    session.execute(update(Feed).where(Feed.id == feed_id).values(next_poll_at=when))


def known_items(session: Session, *, feed_id: int) -> dict[str, str]:
    """``item_key_hash -> content_hash`` for every item of the feed seen so far."""
    rows = session.execute(
        select(Sighting.item_key_hash, Sighting.content_hash).where(Sighting.feed_id == feed_id)
    )
    return {k: h for k, h in rows}


def record_item_error(
    session: Session, *, feed_id: int, item_key: str, content_hash: str, code: str,
    detail: str, now: datetime,
) -> None:  # fmt: skip
    """Remember that this version of an item failed, so it is shown and not retried."""
    stmt = insert_for(session, Sighting).values(
        feed_id=feed_id, item_key=item_key, item_key_hash=key_hash(item_key),
        content_hash=content_hash, error_code=code, error_detail=detail[:2000],
        first_seen_at=now, last_seen_at=now,
    )  # fmt: skip
    stmt = stmt.on_conflict_do_update(
        index_elements=[Sighting.feed_id, Sighting.item_key_hash],
        set_={
            "content_hash": content_hash, "error_code": code,
            "error_detail": detail[:2000], "last_seen_at": now,
        },
    )  # fmt: skip
    session.execute(stmt)


def item_errors(session: Session, *, feed_id: int, limit: int = 20) -> list[ItemError]:
    """The most recent item-level errors of a feed."""
    rows = session.scalars(
        select(Sighting)
        .where(Sighting.feed_id == feed_id, Sighting.error_code.is_not(None))
        .order_by(Sighting.last_seen_at.desc(), Sighting.id.desc())
        .limit(limit)
    )
    return [
        ItemError(
            feed_id=r.feed_id, item_key=r.item_key, code=r.error_code or "error",
            detail=r.error_detail or "", seen_at=r.last_seen_at,
        )
        for r in rows
    ]  # fmt: skip


UNSET: object = object()


def update_feed(
    session: Session, feed_id: int, *, now: datetime, title: object = UNSET,
    interval_override: object = UNSET, enabled: bool | None = None, fulltext: str | None = None,
) -> FeedRecord:  # fmt: skip
    """Operator changes. Enabling a disabled feed clears its error state and polls it now.

    ``fulltext`` is one of ``FULLTEXT_MODES`` (InvalidInput otherwise).
    """
    if fulltext is not None and fulltext not in FULLTEXT_MODES:
        raise InvalidInput(f"fulltext must be one of {', '.join(FULLTEXT_MODES)}",
                           param="fulltext")  # fmt: skip
    row = _row(session, feed_id, lock=True)
    if fulltext is not None:
        row.fulltext = fulltext
    if title is not UNSET:
        row.title = None if title is None else str(title)[:TITLE_MAX]
    if interval_override is not UNSET:
        row.interval_override = None if interval_override is None else int(str(interval_override))
        if row.interval_override is not None:
            row.interval_seconds = row.interval_override
    if enabled is True and row.disabled_at is not None:
        row.disabled_at = None
        row.disabled_reason = None
        row.error_count = 0
        row.first_error_at = None
        row.throttled_until = None
        row.next_poll_at = now
    elif enabled is False and row.disabled_at is None:
        row.disabled_at = now
        row.disabled_reason = "operator"
    row.updated_at = now
    session.flush()
    return to_record(row)


def delete_feed(session: Session, feed_id: int) -> None:
    """Forget a source and its items; the articles it brought stay."""
    session.delete(_row(session, feed_id))


def poll_now(session: Session, feed_id: int, *, now: datetime) -> FeedRecord:
    """Make a feed due at once. Raises Conflict for a disabled feed (enable it first)."""
    row = _row(session, feed_id, lock=True)
    if row.disabled_at is not None:
        raise Conflict(f"feed {feed_id} is disabled ({row.disabled_reason}); enable it first")
    row.next_poll_at = now
    row.throttled_until = None
    session.flush()
    return to_record(row)


def add_feeds(
    session: Session, entries: Iterable[tuple[str, str | None]], *, interval_seconds: int,
    now: datetime,
) -> int:  # fmt: skip
    """Register many ``(url, title)`` http feeds (an OPML import batch); returns how many were
    new. URLs already registered are skipped."""
    created = 0
    for url, title in entries:
        try:
            add_feed(session, url=url, kind="http", interval_seconds=interval_seconds, now=now,
                     title=title)  # fmt: skip
        except Conflict:
            continue
        created += 1
    return created
