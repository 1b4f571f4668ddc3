"""`newsdesk reprocess`: queue stored articles for re-extraction, dedup and entities."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, datetime

from services.config import Settings

BATCH = 1000


def add_subparser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "reprocess",
        help="re-run extraction, dedup and entities on stored articles through the queue",
    )
    parser.add_argument("--since", type=_date, help="only articles stored since (YYYY-MM-DD)")
    parser.add_argument("--feed", type=int, help="only articles seen in this feed")
    parser.add_argument("--wait", action="store_true", help="show progress until done")


def _date(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {raw!r} (use YYYY-MM-DD)") from None


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Queue one reprocess job per selected article (jobs already queued are not doubled)."""
    from sqlalchemy import select

    from services.db.engine import make_engine, session_factory
    from services.db.models import Article, Sighting
    from services.queue import enqueue_reprocess, extract_queue, redis_client

    engine = make_engine(settings.database_url, immediate=False, role="reprocess")
    connection = redis_client(settings)
    queue = extract_queue(settings, connection)
    try:
        run_id = uuid.uuid4().hex[:12]
        queued = seen = 0
        after = 0
        with session_factory(engine)() as session:
            while True:
                stmt = select(Article.id).where(Article.id > after).order_by(Article.id)
                if args.since:
                    stmt = stmt.where(Article.created_at >= args.since)
                if args.feed:
                    stmt = stmt.where(
                        Article.id.in_(
                            select(Sighting.article_id).where(Sighting.feed_id == args.feed)
                        )
                    )
                ids = list(session.scalars(stmt.limit(BATCH)))
                if not ids:
                    break
                for article_id in ids:
                    queued += enqueue_reprocess(
                        queue, article_id, run=run_id, timeout=settings.job_timeout
                    )
                seen += len(ids)
                after = ids[-1]
                print(f"\rqueued {queued} of {seen} articles", end="", file=sys.stderr)
        print(f"\rqueued {queued} of {seen} articles", file=sys.stderr)
        if args.wait:
            _wait(queue)
    finally:
        connection.close()
        engine.dispose()
    return 0


def _wait(queue: object) -> None:
    """Print the queue's remaining length until the workers have drained it."""
    from rq import Queue

    assert isinstance(queue, Queue)
    while (left := queue.count) > 0:
        print(f"\rwaiting: {left} jobs left   ", end="", file=sys.stderr)
        time.sleep(1)
    print("\rall queued work done          ", file=sys.stderr)
