"""Reconciliation: re-create extraction work that SQL says is owed but Redis no longer holds.

Extraction jobs live only in Redis. What SQL knows is which items were stored (sightings)
and each feed's validators (ETag, Last-Modified, body hash), which let the poller skip an
unchanged feed. Work can be lost between the two in two ways, and each has its repair:

- **Redis lost its data** (restarted without persistence, flushed, replaced). A marker key
  written once per Redis data set (``newsdesk:epoch``) is missing: every HTTP feed's
  validators are cleared, so its next poll downloads and parses it in full and re-queues
  each item that has no sighting yet. The schedule is left alone: ``next_poll_at`` is also
  how pollers claim feeds, and making every feed due at once would hand feeds another
  poller is fetching right now to a second poller. Folder sources need nothing: every scan
  compares the files with their sightings.
- **A job used up its retries** (the database was down longer than the retry schedule):
  it waits in rq's failed registry. Every ``sweep_interval`` seconds such extraction jobs
  are queued again, at most ``MAX_SWEEPS`` times each, so a job that fails for good (a bug)
  stays visible there instead of looping.

Both are safe to run from several pollers at once: the marker is set with ``SET NX`` (one
poller repairs), and a job already requeued by another sweep is skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.db.engine import transaction
from services.db.models import Feed
from services.metrics import Recorder

log = logging.getLogger("newsdesk.poller")

EPOCH_KEY = "newsdesk:epoch"
MAX_SWEEPS = 5
SWEEPS_META = "newsdesk_sweeps"


@dataclass(frozen=True)
class Repairs:
    """What one reconciliation pass did."""

    redis_lost: bool = False
    feeds_reset: int = 0
    jobs_requeued: int = 0


class Reconciler:
    """Detects lost Redis data and stranded failed jobs; called at the start of each cycle."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queue: Queue,
        *,
        sweep_interval: float,
        metrics: Recorder | None = None,
    ) -> None:
        self._metrics = metrics or Recorder(None)
        self._sessions = sessions
        self._queue = queue
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0

    def run(self, now: datetime) -> Repairs:
        """One pass: the marker check every time (one round trip), the sweep when due."""
        lost = self._redis_lost(now)
        reset = self._reset_validators() if lost else 0
        requeued = 0
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._sweep_interval
            requeued = self._requeue_failed()
        repairs = Repairs(lost, reset, requeued)
        name = "newsdesk_reconcile_repairs_total"
        self._metrics.add(name, int(lost), kind="redis_lost")
        self._metrics.add(name, reset, kind="feeds_reset")
        self._metrics.add(name, requeued, kind="jobs_requeued")
        if reset or requeued:
            log.warning(
                "reconcile.repaired redis_lost=%s feeds_reset=%d jobs_requeued=%d",
                lost, reset, requeued,
            )  # fmt: skip
        elif lost:  # a new Redis data set with no feed to repair: a first start
            log.info("reconcile.redis_marked key=%s", EPOCH_KEY)
        return repairs

    def _redis_lost(self, now: datetime) -> bool:
        # The first poller to see the marker missing sets it and repairs; on a brand-new
        # installation that repair is one full fetch of feeds that have no validators yet.
        created = self._queue.connection.set(EPOCH_KEY, now.isoformat(), nx=True)
        return bool(created)

    def _reset_validators(self) -> int:
        with transaction(self._sessions) as session:
            result = session.execute(
                update(Feed)
                .where(Feed.kind == "http")
                .values(etag=None, last_modified=None, body_hash=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _requeue_failed(self) -> int:
        registry = FailedJobRegistry(queue=self._queue)
        requeued = 0
        for job_id in registry.get_job_ids():
            if not job_id.startswith("extract-"):
                continue
            try:
                job = Job.fetch(job_id, connection=self._queue.connection,
                                serializer=self._queue.serializer)  # fmt: skip
                sweeps = int(job.meta.get(SWEEPS_META, 0))
                if sweeps >= MAX_SWEEPS:
                    continue
                job.meta[SWEEPS_META] = sweeps + 1
                job.save_meta()  # type: ignore[no-untyped-call]
                registry.requeue(job)
            except (NoSuchJobError, InvalidJobOperation):
                continue  # gone or requeued by another poller meanwhile
            requeued += 1
        return requeued
