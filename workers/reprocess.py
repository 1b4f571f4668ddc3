"""Re-run entity extraction on a stored article, so model and resolution improvements reach
old data. Idempotent: the article's mentions become exactly what the current code finds."""

from __future__ import annotations

import logging

from services.core.entities import canonicalise
from services.db import entities
from services.db.engine import transaction
from services.db.models import Article
from workers.context import WorkerContext

log = logging.getLogger("newsdesk.worker")


def reprocess(ctx: WorkerContext, article_id: int) -> dict[str, object]:
    """Recompute one article's entities from its stored title and text."""
    with ctx.sessions() as session:
        row = session.get(Article, article_id)
        if row is None:
            return {"status": "missing", "article_id": article_id}
        text = f"{row.title}\n\n{row.text}"
    found = canonicalise(text, ctx.recogniser.recognise(text))
    with transaction(ctx.sessions) as session:
        stored = entities.store_entities(
            session, article_id=article_id, found=found, now=ctx.clock()
        )
    log.info("article.reprocessed article_id=%d entities=%d", article_id, len(stored))
    return {"status": "reprocessed", "article_id": article_id, "entities": len(stored)}
