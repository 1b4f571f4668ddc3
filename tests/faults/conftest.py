"""Fixtures of the fault suite: a played-back news day, a receiver, and the roles as processes.

Settings come from the shared ``settings`` fixture (so CI's two runs pick SQLite + embedded
Redis, or PostgreSQL + Redis, from ``NEWSDESK_TEST_DATABASE_URL``/``NEWSDESK_TEST_REDIS_URL``),
with every interval shrunk so that a fault and the recovery from it fit in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, update

from services.config import Settings
from services.db import feeds, subscriptions
from services.db.engine import session_factory, transaction
from services.db.models import Feed
from services.webhooks.filters import Filters
from services.webhooks.signing import new_secret
from tests.faults.cluster import Cluster, Role, wait_for
from tests.faults.invariants import Subscribed, World, problems
from tests.faults.playback import PLAYLISTS, Playback
from tests.faults.receiver import Receiver

# Intervals shrunk from minutes to about a second; retries, leases and sweeps likewise.
TUNING: dict[str, object] = {
    "seeds_dir": None,
    "log_format": "text",
    "poll_tick": 0.2,
    "feed_interval": 1.0,
    "feed_min_interval": 1,
    "feed_max_interval": 1,
    "cache_hint_cap": 0,
    "host_concurrency": 8,
    "host_spacing": 0.0,
    "http_timeout": 2.0,
    "job_timeout": 30,
    "maintenance_interval": 2,
    "sweep_interval": 2.0,
    "workers": 2,
    "webhook_workers": 2,
    "webhook_timeout": 2.0,
    "webhook_lease": 4.0,
    "webhook_tick": 0.1,
    "webhook_concurrency": 4,
    # About 17 s of retries: longer than any receiver outage a scenario stages.
    "webhook_schedule": (0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0),
}
SETTLE_SECONDS = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (tests/faults; also -m faults)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in item.nodeid:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)


@dataclass
class Scenario:
    """One scenario's world and the processes running in it."""

    world: World
    cluster: Cluster
    started: float = field(default_factory=time.monotonic)

    @property
    def settings(self) -> Settings:
        return self.cluster.settings

    def start_roles(self, *, workers: int = 2, pollers: int = 1) -> dict[str, list[Role]]:
        """Every role of a deployment: pollers, workers, a dispatcher and deliverers."""
        return {
            "worker": [self.cluster.start("worker", "--workers", str(workers))],
            "dispatcher": [self.cluster.start("dispatcher")],
            "deliver": [self.cluster.start("deliver")],
            "poller": [self.cluster.start("poller") for _ in range(pollers)],
        }

    def settle(self, timeout: float = SETTLE_SECONDS) -> None:
        """Wait until every invariant holds, then check them all once more."""
        try:
            wait_for(lambda: not problems(self.world), timeout, "the invariants", interval=0.5)
        except AssertionError:
            found = problems(self.world)
            pytest.fail(
                "invariants broken:\n- " + "\n- ".join(found) + "\n" + self.cluster.logs_text()
            )
        assert problems(self.world) == []


def build_world(
    settings: Settings, engine: Engine, conn: redis.Redis, playback: Playback, receiver: Receiver
) -> World:
    """Register the played-back feeds and two subscriptions (all article events; one feed)."""
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    feed_ids: dict[str, int] = {}
    with transaction(sessions) as session:
        for name in playback.feeds:
            record = feeds.add_feed(
                session, url=playback.url(name), kind="http", interval_seconds=1, now=now
            )
            feed_ids[name] = record.id
        # The captures' links point at the real publishers: no article pages are fetched.
        session.execute(update(Feed).values(fulltext="never"))
        made = []
        for path, types, feed_filter in (
            ("/all", ("article.created", "article.updated"), ()),
            ("/bbc", ("article.created",), (feed_ids["bbc"],)),
        ):
            secret = new_secret()
            sub = subscriptions.create_subscription(
                session, url=receiver.url(path), description=None, event_types=types,
                filters=Filters(feeds=feed_filter), secret=secret, now=now,
            )  # fmt: skip
            made.append(Subscribed(sub.id, receiver.endpoint(path, secret), types, feed_filter))
    return World(settings, sessions, conn, playback, receiver, feed_ids, made)


@pytest.fixture
def playback() -> Iterator[Playback]:
    server = Playback()
    for name, files in PLAYLISTS.items():
        server.add(name, files)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    return settings.with_overrides(**TUNING)


@contextmanager
def running(
    settings: Settings,
    engine: Engine,
    playback: Playback,
    receiver: Receiver,
    logs: Path,
) -> Iterator[Scenario]:
    conn = redis.Redis.from_url(settings.redis_url)
    world = build_world(settings, engine, conn, playback, receiver)
    cluster = Cluster(settings, logs)
    try:
        yield Scenario(world, cluster)
    finally:
        cluster.stop_all()
        conn.close()


@pytest.fixture
def scenario(
    tuned: Settings, engine: Engine, playback: Playback, receiver: Receiver, tmp_path: Path
) -> Iterator[Scenario]:
    """The shared database and Redis (cleaned), tuned settings, nothing started yet."""
    with running(tuned, engine, playback, receiver, tmp_path / "logs") as made:
        yield made
