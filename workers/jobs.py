"""rq job entrypoints: thin, importable, primitive arguments (see services/queue.py)."""

from __future__ import annotations

from typing import Any

from workers.context import current
from workers.pipeline import process


def extract_item(payload: dict[str, Any]) -> dict[str, Any]:
    """Extract, deduplicate and store one feed item or folder file."""
    return process(current(), payload).as_dict()


def reprocess_article(article_id: int) -> dict[str, Any]:
    """Re-run extraction, dedup and entities on a stored article with the current code."""
    from workers.reprocess import reprocess

    return reprocess(current(), int(article_id))
