"""The extraction pipeline: payload -> article, entities and event, deduplicated, idempotent."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.core.entities import ArticleEntity as FoundEntity
from services.core.entities import canonicalise
from services.core.errors import ExtractError
from services.core.extract import Extracted, ItemPayload, extract
from services.db import articles, events, feeds
from services.db.articles import ItemRef
from services.db.engine import transaction
from workers.context import WorkerContext

log = logging.getLogger("newsdesk.worker")


@dataclass(frozen=True)
class Outcome:
    """What one job did; returned as the rq job result."""

    status: str  # created | duplicate | updated | unchanged | error
    article_id: int | None = None
    reason: str | None = None
    event_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def process(ctx: WorkerContext, raw: Any) -> Outcome:
    """Run one extraction job. Safe to run any number of times with the same payload."""
    started = time.monotonic()
    item = ItemPayload.from_dict(raw)
    outcome = _process(ctx, item)
    log.info(
        "item.processed feed_id=%s item=%s status=%s article_id=%s reason=%s ms=%d",
        item.feed_id,
        item.item_key[:120],
        outcome.status,
        outcome.article_id,
        outcome.reason,
        (time.monotonic() - started) * 1000,
    )
    return outcome


def _process(ctx: WorkerContext, item: ItemPayload) -> Outcome:
    with ctx.sessions() as session:
        state = articles.sighting_state(session, feed_id=item.feed_id, item_key=item.item_key)
    if state is not None and state.content_hash == item.content_hash:
        # This exact version of the item was handled already (a re-run or a re-poll).
        return Outcome("unchanged", state.article_id, reason="sighting")
    try:
        extracted = extract(item)
    except ExtractError as exc:
        with transaction(ctx.sessions) as session:
            feeds.record_item_error(
                session,
                feed_id=item.feed_id,
                item_key=item.item_key,
                content_hash=item.content_hash,
                code=exc.code,
                detail=str(exc),
                now=ctx.clock(),
            )
        return Outcome("error", reason=exc.code)
    ref = ItemRef(item.feed_id, item.item_key, item.content_hash, item.url)
    if state is not None and state.article_id is not None:
        return _changed(ctx, ref, state.article_id, extracted)
    with ctx.sessions() as session:
        dup = _find_duplicate(session, extracted)
    if dup is not None:
        return _attach(ctx, ref, extracted, *dup)
    return _store_new(ctx, ref, extracted)


def _find_duplicate(session: Session, extracted: Extracted) -> tuple[int, str] | None:
    by_url = articles.find_by_urls(session, extracted.urls)
    if by_url is not None:
        return by_url, "url"
    by_text = articles.find_by_content(session, extracted.content_hash)
    if by_text is not None:
        return by_text, "content"
    return None


def _attach(
    ctx: WorkerContext, ref: ItemRef, extracted: Extracted, article_id: int, reason: str
) -> Outcome:
    with transaction(ctx.sessions) as session:
        articles.attach(
            session, article_id=article_id, item=ref, urls=extracted.urls, now=ctx.clock()
        )
    return Outcome("duplicate", article_id, reason=reason)


def _entities(ctx: WorkerContext, extracted: Extracted) -> list[FoundEntity]:
    # NER runs outside any transaction: the write lock is held only for the writes.
    return canonicalise(extracted.analysed_text, ctx.recogniser.recognise(extracted.analysed_text))


def _record(
    session: Session,
    *,
    event_type: str,
    article_id: int,
    ref: ItemRef,
    found: list[FoundEntity],
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> int:
    """Write the article's entities and the event telling subscribers about it."""
    stored = articles.replace_entities(session, article_id=article_id, found=found, now=now)
    payload = articles.article_event_payload(
        session, article_id=article_id, feed_id=ref.feed_id, entities=stored
    )
    if changes:
        payload["changes"] = changes
    return events.add_event(
        session,
        type=event_type,
        now=now,
        article_id=article_id,
        feed_id=ref.feed_id,
        payload=payload,
    )


def _store_new(ctx: WorkerContext, ref: ItemRef, extracted: Extracted) -> Outcome:
    found = _entities(ctx, extracted)
    with transaction(ctx.sessions) as session:
        now = ctx.clock()
        article_id = articles.insert_article(session, extracted=extracted, now=now)
        if article_id is None:
            # Another worker stored the same URL or text between our lookup and insert.
            dup = _find_duplicate(session, extracted)
            if dup is None:
                raise RuntimeError("article insert conflicted but no duplicate was found")
            articles.attach(session, article_id=dup[0], item=ref, urls=extracted.urls, now=now)
            return Outcome("duplicate", dup[0], reason=dup[1])
        articles.attach(session, article_id=article_id, item=ref, urls=extracted.urls, now=now)
        event_id = _record(
            session,
            event_type="article.created",
            article_id=article_id,
            ref=ref,
            found=found,
            now=now,
        )
    return Outcome("created", article_id, event_id=event_id)


def _changed(ctx: WorkerContext, ref: ItemRef, article_id: int, extracted: Extracted) -> Outcome:
    """A known item came back with different content."""
    with ctx.sessions() as session:
        same_text = articles.find_by_content(session, extracted.content_hash)
    if same_text is not None:
        # Only the item's raw fields moved (a tracking parameter, markup): nothing to tell.
        return _attach(ctx, ref, extracted, same_text, "content")
    found = _entities(ctx, extracted)
    with transaction(ctx.sessions) as session:
        now = ctx.clock()
        changes = articles.update_article(
            session, article_id=article_id, extracted=extracted, now=now
        )
        articles.attach(session, article_id=article_id, item=ref, urls=extracted.urls, now=now)
        if not changes:
            return Outcome("unchanged", article_id, reason="same_article")
        event_id = _record(
            session,
            event_type="article.updated",
            article_id=article_id,
            ref=ref,
            found=found,
            now=now,
            changes=changes,
        )
    return Outcome("updated", article_id, event_id=event_id)
