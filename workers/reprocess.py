"""Reprocess a stored article with the current code: extraction, dedup and entities.

So that improvements reach old data. For one article:

1. **Extraction** runs again on the job payload its text came from (``article_sources``),
   so a better extractor or cleaner rewrites the stored title, text, summary and language.
   Articles stored before sources were kept are re-analysed from their stored text.
2. **Dedup** compares the article with every other stored article: when one has the same
   URL, the same text or a near-duplicate text, the newer of the two is merged into the
   older (sightings and URLs move, the old id redirects). The older one always survives, so
   reprocessing a set of articles gives the same result in any order. The article's
   near-duplicate index is rebuilt, and an article without a story gets one.
3. **Entities** are recomputed (a merged article skips NER).

Idempotent: a second run finds nothing to change. Reprocessing sends no webhook events: the
news did not change, only newsdesk's reading of it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.core import neardup
from services.core.entities import ArticleEntity as FoundEntity
from services.core.entities import canonicalise
from services.core.errors import ExtractError
from services.core.extract import Extracted, ItemPayload, extract
from services.db import articles, bands, entities, stories
from services.db.engine import reading, transaction
from services.db.models import Article
from workers.context import WorkerContext

log = logging.getLogger("newsdesk.worker")


def reprocess(ctx: WorkerContext, article_id: int) -> dict[str, Any]:
    """Re-run extraction, dedup and entity extraction on one stored article."""
    with reading(ctx.sessions) as session:
        current = _load(session, article_id)
    if isinstance(current, dict):
        return current
    extracted, source = current
    sketch = neardup.sketch(extracted.text, extracted.normalised_text)
    with reading(ctx.sessions) as session:
        copies = _copies(session, article_id, extracted, sketch)
    found = None
    if not _older(copies, article_id):  # this article stays: it needs its entities
        text = extracted.analysed_text
        found = canonicalise(text, ctx.recogniser.recognise(text))
    with transaction(ctx.sessions) as session:
        stories.lock_dedup(session)
        now = ctx.clock()
        if session.get(Article, article_id) is None:
            return _gone(session, article_id)
        copies = _copies(session, article_id, extracted, sketch)
        older = _older(copies, article_id)
        if older is not None:
            target, reason = older
            articles.merge_article(session, loser=article_id, winner=target, reason=reason, now=now)
            log.info("article.merged article_id=%d into=%d reason=%s", article_id, target, reason)
            return {"status": "merged", "article_id": article_id, "into": target, "reason": reason}
        if found is not None:
            for other, reason in sorted(copies.items()):
                articles.merge_article(
                    session, loser=other, winner=article_id, reason=reason, now=now
                )
                log.info(
                    "article.merged article_id=%d into=%d reason=%s", other, article_id, reason
                )
            result = _refresh(session, article_id, extracted, sketch, found, source, now)
            return result | {"absorbed": sorted(copies)}
    # The older copy seen before the lock is gone: this article stays, so it needs entities.
    return reprocess(ctx, article_id)


def _load(session: Session, article_id: int) -> tuple[Extracted, bool] | dict[str, Any]:
    """The article as the current extractor reads it, and whether a source was re-read."""
    row = session.get(Article, article_id)
    if row is None:
        return _gone(session, article_id)
    stored = Extracted(
        title=row.title,
        text=row.text,
        summary=row.summary,
        url=None,
        canonical_url=row.canonical_url,
        published_at=row.published_at,
        byline=row.byline,
        content_hash=row.content_hash,
        boilerplate=row.boilerplate,
        language=row.language,
    )
    raw = articles.load_source(session, article_id)
    if raw is None:
        return stored, False
    try:
        fresh = extract(ItemPayload.from_dict(raw))
    except ExtractError as exc:
        # The current extractor rejects a source an older one accepted: keep what is stored.
        log.warning("article.reextract_failed article_id=%d code=%s", article_id, exc.code)
        return stored, False
    return fresh, True


def _gone(session: Session, article_id: int) -> dict[str, Any]:
    into = articles.merged_into(session, article_id)
    if into is None:
        return {"status": "missing", "article_id": article_id}
    return {"status": "merged", "article_id": article_id, "into": into}


def _copies(
    session: Session, article_id: int, extracted: Extracted, sketch: neardup.Sketch | None
) -> dict[int, str]:
    """Other stored articles this one is a copy of (or that are copies of it), and why."""
    found: dict[int, str] = {}
    match = bands.find_similar(session, sketch, exclude=article_id)
    if match is not None and match.relation is neardup.Relation.DUPLICATE:
        found[match.article_id] = "near_duplicate"
    by_text = articles.find_by_content(session, extracted.content_hash)
    if by_text is not None and by_text != article_id:
        found[by_text] = "content"
    by_url = articles.find_by_urls(session, extracted.urls, exclude=article_id)
    if by_url is not None:
        found[by_url] = "url"
    return found


def _older(copies: dict[int, str], article_id: int) -> tuple[int, str] | None:
    """The oldest copy if it is older than the article (the article is then merged into it)."""
    if not copies:
        return None
    oldest = min(copies)
    return (oldest, copies[oldest]) if oldest < article_id else None


def _refresh(
    session: Session,
    article_id: int,
    extracted: Extracted,
    sketch: neardup.Sketch | None,
    found: list[FoundEntity],
    source: bool,
    now: datetime,
) -> dict[str, Any]:
    """Store the re-extracted fields, the near-duplicate index, the story and the entities."""
    changes: dict[str, Any] = {}
    if source:
        changes = articles.update_article(
            session, article_id=article_id, extracted=extracted, now=now
        )
    # The stored text is now the extracted one (update_article stores every field that differs).
    bands.index_article(
        session, article_id=article_id, sketch=sketch, content_hash=extracted.content_hash
    )
    row = session.get(Article, article_id)
    assert row is not None
    if row.story_id is None:
        like = bands.find_similar(session, sketch, exclude=article_id)
        if like is None:
            stories.start_story(session, article_id=article_id, now=now)
        else:
            stories.join_story(session, article_id=article_id, like=like.article_id, now=now)
    stored = entities.store_entities(session, article_id=article_id, found=found, now=now)
    fields = changes.get("fields", [])
    log.info(
        "article.reprocessed article_id=%d entities=%d changed=%s",
        article_id,
        len(stored),
        ",".join(fields) or "-",
    )
    return {
        "status": "reprocessed",
        "article_id": article_id,
        "entities": len(stored),
        "changed": fields,
    }
