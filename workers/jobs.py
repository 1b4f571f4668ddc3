"""rq job entrypoints: thin, importable, primitive arguments (see services/queue.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from workers.context import WorkerContext, current
from workers.pipeline import process


def extract_item(payload: dict[str, Any]) -> dict[str, Any]:
    """Extract, deduplicate and store one feed item or folder file."""
    ctx = current()
    with _measured(ctx, "extract") as outcome:
        result = process(ctx, payload)
        outcome(result.status)
    return result.as_dict()


def reprocess_article(article_id: int) -> dict[str, Any]:
    """Re-run extraction, dedup and entities on a stored article with the current code."""
    from workers.reprocess import reprocess

    ctx = current()
    with _measured(ctx, "reprocess") as outcome:
        result = reprocess(ctx, int(article_id))
        outcome(str(result.get("status", "done")))
    return result


@contextmanager
def _measured(ctx: WorkerContext, kind: str) -> Iterator[Callable[[str], None]]:
    """Count the job's outcome and time it (``/metrics``); an exception counts as failed."""
    started = time.perf_counter()
    status = "failed"

    def set_status(value: str) -> None:
        nonlocal status
        status = value

    try:
        yield set_status
    finally:
        name = "newsdesk_items_total" if kind == "extract" else "newsdesk_reprocessed_total"
        ctx.metrics.add(name, status=status)
        ctx.metrics.observe(
            "newsdesk_job_duration_seconds", time.perf_counter() - started, kind=kind
        )
        ctx.metrics.flush()
