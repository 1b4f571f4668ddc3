"""The extraction pipeline: payload -> article, entities and event, deduplicated, idempotent.

Dedup order: same feed item (sighting) -> canonical URL -> exact normalised-text hash ->
near-duplicate (services/core/neardup.py) -> new article. A lookup outside any transaction
decides whether NER is needed (a duplicate skips it); the decision that counts is taken again
inside the write transaction, under the dedup lock, so concurrent workers decide as if they
ran one after the other.

A worker holding several jobs runs them as a batch first (workers/batch.py): then each job
finds its item's outcome, or its item extracted and through NER, in ``ctx.prepared``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.core import neardup
from services.core.entities import ArticleEntity as FoundEntity
from services.core.entities import canonicalise
from services.core.errors import ExtractError
from services.core.extract import Extracted, ItemPayload, extract
from services.db import (
    article_events,
    articles,
    bands,
    entities,
    events,
    feeds,
    sightings,
    stories,
)
from services.db.articles import ItemRef
from services.db.engine import reading, transaction
from workers.context import WorkerContext

log = logging.getLogger("newsdesk.worker")

# At most this many ``article.updated`` events per article per window: a live blog or a feed
# that rewrites its items every poll must not flood subscribers. Beyond the cap the article is
# still updated, silently (logged as ``article.update_capped``).
UPDATE_EVENTS_PER_WINDOW = 3
UPDATE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Outcome:
    """What one job did; returned as the rq job result."""

    status: str  # created | duplicate | updated | unchanged | error
    article_id: int | None = None
    reason: str | None = None
    event_id: int | None = None
    story_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Decision:
    """Where an item goes: onto an existing article (a copy), or a new one in some story."""

    article_id: int | None = None  # the stored article the item is a copy of
    reason: str | None = None  # url | content | near_duplicate
    story_like: int | None = None  # a stored article of the same story, for a new article
    # Stored articles that were near-duplicate candidates (bands.find_similar_many);
    # 0 when the item was not looked up by its bands (a copy by URL or text, a short text).
    candidates: int = 0


@dataclass(frozen=True)
class Ready:
    """A new item extracted and, unless it is a copy of a stored article, through NER."""

    extracted: Extracted
    sketch: neardup.Sketch | None
    found: list[FoundEntity] | None  # None: looked like a copy, NER skipped


def ready_key(item: ItemPayload | ItemRef) -> tuple[int, str, str]:
    """Which prepared entry (``ctx.prepared``) belongs to an item's job."""
    return (item.feed_id, item.item_key, item.content_hash)


def item_ref(item: ItemPayload, raw: dict[str, Any]) -> ItemRef:
    """The item as it is recorded on its article: its sighting, URL and job payload."""
    return ItemRef(item.feed_id, item.item_key, item.content_hash, item.url, raw)


def process(ctx: WorkerContext, raw: Any) -> Outcome:
    """Run one extraction job. Safe to run any number of times with the same payload."""
    started = time.monotonic()
    item = ItemPayload.from_dict(raw)
    outcome = _process(ctx, item, raw)
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


def _process(ctx: WorkerContext, item: ItemPayload, raw: dict[str, Any]) -> Outcome:
    ready = ctx.prepared.pop(ready_key(item), None)
    if isinstance(ready, Outcome):
        return ready  # stored with the rest of its batch (prepare)
    with reading(ctx.sessions) as session:
        state = sightings.sighting_state(session, feed_id=item.feed_id, item_key=item.item_key)
    if state is not None and state.content_hash == item.content_hash:
        # This exact version of the item was handled already (a re-run or a re-poll).
        return Outcome("unchanged", state.article_id, reason="sighting")
    ref = item_ref(item, raw)
    if ready is not None and (state is None or state.article_id is None):
        return _store(ctx, ref, ready.extracted, ready.sketch, ready.found)
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
    sketch = neardup.sketch(extracted.text, extracted.normalised_text)
    if state is not None and state.article_id is not None:
        return _changed(ctx, ref, state.article_id, extracted, sketch)
    with reading(ctx.sessions) as session:
        hint = decide(session, extracted, sketch)
    found = None if hint.article_id is not None else _entities(ctx, extracted)
    return _store(ctx, ref, extracted, sketch, found)


def decide(session: Session, extracted: Extracted, sketch: neardup.Sketch | None) -> Decision:
    """Where an item goes, as storage stands (see :func:`decide_many`)."""
    return decide_many(session, [(extracted, sketch)])[0]


def decide_many(
    session: Session, items: Sequence[tuple[Extracted, neardup.Sketch | None]]
) -> list[Decision]:
    """Where each item goes, as storage stands, in four statements at most for all of them:
    a copy by URL, else by text, else by near-duplicate text; or new, in the story of the
    closest related article if there is one. Each is decided as if it were alone."""
    copies = articles.find_copies(session, [(e.urls, e.content_hash) for e, _ in items])
    matches = bands.find_similar_many(
        session, [None if copy is not None else sketch for copy, (_, sketch) in zip(
            copies, items, strict=True)]
    )  # fmt: skip
    found: list[Decision] = []
    for copy, (match, candidates) in zip(copies, matches, strict=True):
        if copy is not None:
            found.append(Decision(copy[1], copy[0]))
        elif match is None:
            found.append(Decision(candidates=candidates))
        elif match.relation is neardup.Relation.DUPLICATE:
            found.append(Decision(match.article_id, "near_duplicate", candidates=candidates))
        else:
            found.append(Decision(story_like=match.article_id, candidates=candidates))
    return found


def _store(
    ctx: WorkerContext,
    ref: ItemRef,
    extracted: Extracted,
    sketch: neardup.Sketch | None,
    found: list[FoundEntity] | None,
) -> Outcome:
    """Attach the item to its article or store a new one, deciding again under the lock."""
    with transaction(ctx.sessions) as session:
        stories.lock_dedup(session)
        outcome = write_item(session, ref, Ready(extracted, sketch, found), ctx.clock())
        if outcome is not None:
            return outcome
    # The copy seen before the lock is gone (its article's text changed): a new article, so
    # it needs its entities after all.
    return _store(ctx, ref, extracted, sketch, _entities(ctx, extracted))


def write_item(session: Session, ref: ItemRef, ready: Ready, now: datetime) -> Outcome | None:
    """Under the dedup lock: attach the item to the article it copies, or insert it as a new
    article. None when it turns out new but came without entities (NER was skipped)."""
    extracted = ready.extracted
    decision = decide(session, extracted, ready.sketch)
    if decision.article_id is not None:
        articles.attach(
            session, article_id=decision.article_id, item=ref, urls=extracted.urls, now=now
        )
        return Outcome("duplicate", decision.article_id, reason=decision.reason)
    if ready.found is None:
        return None
    return _insert(session, ref, extracted, ready.sketch, ready.found, decision, now)


def _insert(
    session: Session,
    ref: ItemRef,
    extracted: Extracted,
    sketch: neardup.Sketch | None,
    found: list[FoundEntity],
    decision: Decision,
    now: datetime,
) -> Outcome:
    article_id = articles.insert_article(session, extracted=extracted, now=now)
    if article_id is None:
        # Only a writer that skips the dedup lock can get here; the job's retry attaches.
        raise RuntimeError("article insert conflicted under the dedup lock")
    (outcome,) = _complete(
        session, [(article_id, ref, Ready(extracted, sketch, found), decision)], now
    )
    return outcome


def write_new(
    session: Session, items: Sequence[tuple[ItemRef, Ready, Decision]], now: datetime
) -> list[Outcome]:
    """Under the dedup lock: insert ``items`` as new articles, in order, each as
    :func:`write_item` would one by one, with a statement for all of them wherever the order
    cannot matter (the articles, their sightings, URLs, sources and bands).

    The caller has checked that none of them is a copy, by URL, text or near-duplicate, of a
    stored article or of another of them: each was decided new, and no two share a URL, a
    text or enough bands to be compared.
    """
    ids = articles.insert_articles(session, [r.extracted for _, r, _ in items], now=now)
    return _complete(
        session, [(i, ref, r, d) for i, (ref, r, d) in zip(ids, items, strict=True)], now
    )


def _complete(
    session: Session, items: Sequence[tuple[int, ItemRef, Ready, Decision]], now: datetime
) -> list[Outcome]:
    """What a new article carries besides its row: its sighting, URLs and source, its story,
    its bands, its entities and its ``article.created`` event."""
    articles.attach_many(session, [(i, ref, r.extracted.urls) for i, ref, r, _ in items], now=now)
    articles.save_sources(session, [(i, ref.payload) for i, ref, _, _ in items], now=now)
    story_ids = _place_in_stories(session, [(i, d.story_like) for i, _, _, d in items], now)
    bands.index_new_articles(
        session, [(i, r.sketch, r.extracted.content_hash) for i, _, r, _ in items]
    )
    found = [(i, r.found) for i, _, r, _ in items if r.found is not None]
    assert len(found) == len(items), "a new article comes with its entities"
    named = entities.store_new_entities(session, found, now=now)
    payloads = [
        (article_id, ref.feed_id, article_events.new_article_event_payload(
            article_id=article_id, extracted=ready.extracted, story_id=story_id,
            feed_id=ref.feed_id, entities=stored,
        ))
        for (article_id, ref, ready, _), story_id, stored in zip(
            items, story_ids, named, strict=True
        )
    ]  # fmt: skip
    event_ids = events.add_events(session, "article.created", payloads, now=now)
    return [
        Outcome("created", article_id, event_id=event_id, story_id=story_id)
        for (article_id, _, _, _), event_id, story_id in zip(
            items, event_ids, story_ids, strict=True
        )
    ]


def _place_in_stories(
    session: Session, items: Sequence[tuple[int, int | None]], now: datetime
) -> list[int]:
    """The story of each new (article id, related stored article or None): the related
    article's, or a story of its own (all of those started in two statements, then all the
    related articles' joined in five at most)."""
    started = iter(
        stories.start_stories(session, [i for i, like in items if like is None], now=now)
    )
    joined = iter(
        stories.join_stories(session, [(i, like) for i, like in items if like is not None], now=now)
    )
    return [next(started) if like is None else next(joined) for _, like in items]


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
    """Write a stored article's entities and the event telling subscribers about it."""
    stored = entities.store_entities(session, article_id=article_id, found=found, now=now)
    payload = article_events.article_event_payload(
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


def _changed(
    ctx: WorkerContext,
    ref: ItemRef,
    article_id: int,
    extracted: Extracted,
    sketch: neardup.Sketch | None,
) -> Outcome:
    """A known item came back with different content.

    Only a material change gets here: a new title or text (their normalised hash moved). A
    tracking parameter, a timestamp, a byline, case or punctuation keep the hash: attach only.
    """
    with reading(ctx.sessions) as session:
        same_text = articles.find_by_content(session, extracted.content_hash)
    if same_text is not None:
        # Only the item's raw fields moved (a tracking parameter, markup): nothing to tell.
        return _attach(ctx, ref, extracted, same_text, "content")
    found = _entities(ctx, extracted)
    with transaction(ctx.sessions) as session:
        stories.lock_dedup(session)  # the article's bands change under other workers' lookups
        now = ctx.clock()
        changes = articles.update_article(
            session, article_id=article_id, extracted=extracted, now=now
        )
        articles.attach(session, article_id=article_id, item=ref, urls=extracted.urls, now=now)
        if not changes:
            return Outcome("unchanged", article_id, reason="same_article")
        articles.save_source(session, article_id=article_id, payload=ref.payload, now=now)
        if "text" in changes["fields"]:
            bands.index_article(
                session, article_id=article_id, sketch=sketch, content_hash=extracted.content_hash
            )
        if _update_capped(session, article_id, now):
            entities.store_entities(session, article_id=article_id, found=found, now=now)
            log.info(
                "article.update_capped article_id=%d fields=%s cap=%d window_h=%d",
                article_id,
                ",".join(changes["fields"]),
                UPDATE_EVENTS_PER_WINDOW,
                UPDATE_WINDOW.total_seconds() // 3600,
            )
            return Outcome("updated", article_id, reason="event_capped")
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


def _update_capped(session: Session, article_id: int, now: datetime) -> bool:
    sent = articles.events_since(
        session, article_id=article_id, type="article.updated", since=now - UPDATE_WINDOW
    )
    return sent >= UPDATE_EVENTS_PER_WINDOW
