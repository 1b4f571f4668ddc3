"""The one checker every fault scenario ends with, and what it checks against.

``problems`` lists every broken invariant (empty: all hold). Scenarios wait until it is
empty (the system has recovered) and then assert it once more, so a failure prints exactly
what is missing, duplicated or stuck.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.models import (
    Article,
    ArticleEntity,
    Delivery,
    Entity,
    Event,
    Feed,
    Sighting,
)
from services.queue import extract_queue, webhook_queue
from tests.faults.playback import Playback
from tests.faults.receiver import Endpoint, Receiver

ARTICLE_EVENTS = ("article.created", "article.updated")


@dataclass(frozen=True)
class Subscribed:
    """A subscription as the test made it: what it should receive, and where."""

    id: int
    endpoint: Endpoint
    event_types: tuple[str, ...]
    feed_ids: tuple[int, ...] = ()  # empty: every feed

    def wants(self, event: Event) -> bool:
        if event.type not in self.event_types:
            return False
        if not self.feed_ids:
            return True
        article = (event.payload or {}).get("article") or {}
        feeds = set(article.get("feed_ids") or ()) | {event.feed_id}
        return bool(feeds & set(self.feed_ids))


@dataclass
class World:
    """Everything a scenario's checker looks at."""

    settings: Settings
    sessions: sessionmaker[Session]
    conn: redis.Redis
    playback: Playback
    receiver: Receiver
    feed_ids: dict[str, int]
    subscribed: list[Subscribed]

    def queues(self) -> list[Queue]:
        return [extract_queue(self.settings, self.conn), webhook_queue(self.settings, self.conn)]


def _storage(session: Session, world: World) -> list[str]:
    found: list[str] = []
    expected = world.playback.expected()
    rows = session.execute(
        select(Sighting.feed_id, Sighting.item_key, Sighting.article_id, Sighting.error_code)
    ).all()
    stored: dict[int, set[str]] = {}
    for feed_id, key, article_id, error in rows:
        stored.setdefault(feed_id, set()).add(key)
        if article_id is None and error is None:
            found.append(f"sighting without article or error: feed {feed_id} {key}")
    for name, keys in expected.items():
        have = stored.get(world.feed_ids[name], set())
        if keys - have:
            found.append(f"{name}: {len(keys - have)} of {len(keys)} items not stored")
        if have - keys:
            found.append(f"{name}: {len(have - keys)} items stored that were never played")
    articles = set(session.scalars(select(Article.id)))
    seen = {a for _, _, a, _ in rows if a is not None}
    if articles - seen:
        found.append(f"{len(articles - seen)} articles no item leads to")
    created = Counter(
        session.scalars(select(Event.article_id).where(Event.type == "article.created"))
    )
    twice = sorted(a for a, n in created.items() if n > 1 and a is not None)
    if twice:
        found.append(f"articles created more than once: {twice[:10]}")
    if set(created) != articles:
        found.append(f"{len(articles ^ set(created))} articles without exactly one creation")
    return found


def _entities(session: Session) -> list[str]:
    counts: dict[int, int] = {
        int(entity_id): int(n)
        for entity_id, n in session.execute(
            select(ArticleEntity.entity_id, func.count()).group_by(ArticleEntity.entity_id)
        )
    }
    wrong = [
        (entity_id, stored, counts.get(entity_id, 0))
        for entity_id, stored in session.execute(select(Entity.id, Entity.article_count))
        if stored != counts.get(entity_id, 0)
    ]
    if not wrong:
        return []
    return [f"entity article_count != its mentions (id, stored, real): {wrong[:5]}"]


def _webhooks(session: Session, world: World) -> list[str]:
    found: list[str] = []
    events = list(session.scalars(select(Event).where(Event.type.in_(ARTICLE_EVENTS))))
    states = Counter(session.scalars(select(Delivery.status)))
    if set(states) - {"succeeded"}:
        found.append(f"deliveries not all succeeded: {dict(states)}")
    for sub in world.subscribed:
        owed = {str(e.id) for e in events if sub.wants(e)}
        with world.receiver.lock:
            processed = Counter(sub.endpoint.processed)
            received = Counter(sub.endpoint.received)
            bad = sub.endpoint.bad_signatures
        path = sub.endpoint.path
        if missing := owed - set(received):
            found.append(f"{path}: {len(missing)} of {len(owed)} events never received")
        if owed - set(processed):
            found.append(f"{path}: {len(owed - set(processed))} events never processed")
        if set(received) - owed:
            found.append(f"{path}: received events it does not match: {set(received) - owed}")
        if any(n != 1 for n in processed.values()):
            found.append(f"{path}: an event was processed twice")
        if bad:
            found.append(f"{path}: {bad} deliveries failed signature verification")
    return found


def _failed_without_retry(session: Session, queue: Queue) -> int:
    """Failed jobs nothing will retry. A failed delivery job counts only while one of its
    deliveries is still out on the lease it carried: the retry of a delivery is its next
    lease in SQL, not an rq retry, and a delivery the job recorded before it failed (a
    batch's results are written in groups) is settled."""
    ids = queue.failed_job_registry.get_job_ids()
    if not ids or not queue.name.endswith("webhooks"):
        return len(ids)
    out = {
        delivery_id: token
        for delivery_id, token in session.execute(
            select(Delivery.id, Delivery.token).where(Delivery.status == "delivering")
        )
    }
    stranded = 0
    for job in Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer):
        pairs = job.args[0] if job is not None and job.args else []
        if job is None or any(out.get(int(d)) == int(t) for d, t in pairs):
            stranded += 1
    return stranded


def _jobs(session: Session, world: World) -> list[str]:
    found: list[str] = []
    for queue in world.queues():
        stuck = {
            "queued": queue.count,
            "started": queue.started_job_registry.count,
            "failed": _failed_without_retry(session, queue),
            "scheduled": queue.scheduled_job_registry.count,
        }
        if any(stuck.values()):
            found.append(f"{queue.name}: jobs left {stuck}")
    lapsed = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.status == "delivering", Delivery.next_attempt_at < datetime.now(UTC))
    )
    if lapsed:
        found.append(f"{lapsed} deliveries stuck in `delivering` past their lease")
    return found


def problems(world: World) -> list[str]:
    """Every broken invariant, in words; empty when they all hold.

    - every item of every capture played back is stored exactly once (one sighting, leading
      to an article or a recorded item error), no article without an item, one
      ``article.created`` per article;
    - every entity's ``article_count`` equals its rows in ``article_entities``;
    - every subscription received every event it matches, processed each once (the
      receiver deduplicates on ``webhook-id``), and every signature verified;
    - no rq job queued, started, failed or scheduled on either queue, and no delivery
      leased past its lease.
    """
    if not world.playback.finished:
        return [f"playback not finished: {_positions(world.playback)}"]
    with world.sessions() as session:
        return (
            _storage(session, world)
            + _entities(session)
            + _webhooks(session, world)
            + _jobs(session, world)
        )


def _positions(playback: Playback) -> dict[str, Any]:
    with playback.lock:
        return {
            n: f"{f.position + 1}/{len(f.captures)}{' ack' if f.acknowledged else ''}"
            for n, f in playback.feeds.items()
        }


def feed_errors(session: Session) -> list[tuple[str, str | None]]:
    """Feeds whose last poll failed (for a failing scenario's message)."""
    return [
        (url, code)
        for url, code in session.execute(select(Feed.url, Feed.last_error_code))
        if code is not None
    ]
