"""rq job entrypoints: thin, importable, primitive arguments (see services/queue.py)."""

from __future__ import annotations

import time
from typing import Any

from services import dataversion
from workers.context import WorkerContext, current
from workers.pipeline import process

# Extraction outcomes that leave stored articles as they were (a failed job, an exception,
# may have committed before failing, so it counts as a change).
UNCHANGED_ITEM = frozenset({"unchanged", "error"})


def extract_item(payload: dict[str, Any]) -> dict[str, Any]:
    """Extract, deduplicate and store one feed item or folder file."""
    ctx, started, status = current(), time.perf_counter(), "failed"
    try:
        result = process(ctx, payload)
        status = result.status
        return result.as_dict()
    finally:
        if status not in UNCHANGED_ITEM:
            ctx.metrics.touch(dataversion.KEY)  # flushed with the metrics, after the commit
        _count(ctx, "newsdesk_items_total", "extract", status, started)


def reprocess_article(article_id: int) -> dict[str, Any]:
    """Re-run extraction, dedup and entities on a stored article with the current code."""
    from workers.reprocess import reprocess

    ctx, started, status = current(), time.perf_counter(), "failed"
    try:
        result = reprocess(ctx, int(article_id))
        status = str(result.get("status", "done"))
        if _reprocess_changed(result):
            ctx.metrics.touch(dataversion.KEY)
        return result
    finally:
        _count(ctx, "newsdesk_reprocessed_total", "reprocess", status, started)


def _reprocess_changed(result: dict[str, Any]) -> bool:
    """Whether a reprocessing job wrote anything the API shows: a merge it made (one found
    already made carries no ``reason``) or a refresh (entities and story are stored again)."""
    status = result.get("status")
    return status == "reprocessed" or (status == "merged" and "reason" in result)


def _count(ctx: WorkerContext, name: str, kind: str, status: str, started: float) -> None:
    """The job's outcome and duration for ``/metrics`` (an exception counts as failed)."""
    ctx.metrics.add(name, status=status)
    ctx.metrics.observe("newsdesk_job_duration_seconds", time.perf_counter() - started, kind=kind)
    ctx.metrics.flush()
