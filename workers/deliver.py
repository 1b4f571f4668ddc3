"""`newsdesk deliver`: webhook delivery processes (no spaCy model), and the rq job they run.

Each process runs rq's SimpleWorker (as workers.rqworker.PromptWorker) on the webhook
queue and keeps one event loop, one HTTP session (connections to subscribers stay open
between deliveries) and the bodies of recent events (an event's body is built once, however
many subscribers it goes to). A job carries a batch of leased deliveries and POSTs them
concurrently. Results are recorded in groups, one transaction each (what finished together,
or within ``RECORD_WINDOW`` of the first), and in the same transaction the subscriptions'
next due deliveries are leased: while no other job waits on the queue the process sends them
itself, otherwise it queues them as a new job. So a backlog drains at the subscribers' pace,
not at the dispatcher's tick, and rq's per-job cost is paid once per batch, not once per
delivery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.errors import ConfigError
from services.db import attempts, leases
from services.db.attempts import Outcome
from services.db.engine import make_engine, reading, session_factory, transaction
from services.db.leases import SendTask
from services.logs import setup_logging
from services.metrics import Recorder
from services.queue import enqueue_deliveries, redis_client, webhook_queue
from services.webhooks.dispatcher import policy
from services.webhooks.payload import Bodies
from services.webhooks.schedule import AttemptResult
from services.webhooks.sender import Sender
from workers.rqworker import PromptWorker

log = logging.getLogger("newsdesk.deliver")

# Once the first POST of a group has finished, the others finishing within this many seconds
# are recorded with it (one transaction); a slower one is recorded on its own later.
RECORD_WINDOW = 0.05
# A job leases and sends its subscriptions' follow-ups itself only this long after it began,
# so it ends well within its rq timeout (the subscriber's timeout + DELIVER_GRACE) and within
# a stopping worker's grace period; a longer backlog continues in a new job.
CHAIN_SECONDS = 2.0
# How often a job looks whether other jobs wait (then it queues its follow-ups behind them);
# a Redis round trip each time, and a job chains for CHAIN_SECONDS at most anyway.
QUEUE_LOOK_SECONDS = 0.5
# Counters are added to Redis at most this often while a job runs, and when it ends.
METRICS_SECONDS = 1.0

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class DeliverContext:
    """What delivery jobs share within one process."""

    settings: Settings
    sessions: sessionmaker[Session]  # one engine: writes BEGIN IMMEDIATE, reads via `reading`
    queue: Queue
    loop: asyncio.AbstractEventLoop
    sender: Sender
    bodies: Bodies
    rng: random.Random = field(default_factory=random.Random)
    metrics: Recorder = field(default_factory=lambda: Recorder(None))
    flushed: float = 0.0  # time.monotonic() of the last metrics flush

    def flush_metrics(self, *, force: bool = False) -> None:
        clock = time.monotonic()
        if force or clock - self.flushed >= METRICS_SECONDS:
            self.metrics.flush()
            self.flushed = clock

    def read_bodies(self, session: Session, tasks: Sequence[SendTask]) -> None:
        """Build the bodies of ``tasks``' events that are not kept yet."""
        missing = self.bodies.missing(task.event_id for task in tasks)
        for event in leases.event_rows(session, missing):
            self.bodies.add(event.id, event.type, event.created_at, event.payload)

    def close(self) -> None:
        self.loop.run_until_complete(self.sender.__aexit__(None, None, None))
        self.loop.close()

    def run(self, work: Awaitable[T]) -> T:
        """Run ``work`` on the process's loop; if it is interrupted (the job's timeout), the
        POSTs it started are cancelled rather than left to resume in the next job."""
        try:
            return self.loop.run_until_complete(work)
        except BaseException:
            rest = asyncio.all_tasks(self.loop)
            for task in rest:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            raise


def build_context(settings: Settings, connection: redis.Redis) -> DeliverContext:
    engine = make_engine(settings.database_url, immediate=True, pool_size=2, role="deliver")
    sessions = session_factory(engine)
    loop = asyncio.new_event_loop()
    sender = loop.run_until_complete(Sender(settings).__aenter__())
    return DeliverContext(
        settings=settings, sessions=sessions,
        queue=webhook_queue(settings, connection), loop=loop, sender=sender,
        bodies=Bodies(public_url=settings.public_url), metrics=Recorder(connection),
    )  # fmt: skip


_current: DeliverContext | None = None


def install(ctx: DeliverContext | None) -> None:
    """Make ``ctx`` the context of this process's delivery jobs."""
    global _current
    _current = ctx


def current() -> DeliverContext:
    if _current is None:
        raise ConfigError("no delivery context installed: run jobs through `newsdesk deliver`")
    return _current


def deliver_batch(leased: list[list[int]]) -> dict[str, int]:
    """rq job: POST a batch of leased deliveries (``[delivery id, token]`` pairs) and record
    what happened; returns how many ended in each outcome (``stale``: the lease moved on)."""
    ctx = current()
    pairs = [(int(d), int(t)) for d, t in leased]
    with reading(ctx.sessions) as session:
        tasks = leases.send_tasks(session, leased=pairs, now=utc_now())
        ctx.read_bodies(session, tasks)
    try:
        outcomes = ctx.run(_pump(ctx, tasks))
    finally:
        ctx.flush_metrics(force=True)
    outcomes["stale"] = outcomes.get("stale", 0) + len(pairs) - len(tasks)
    return outcomes


def deliver(delivery_id: int, token: int) -> dict[str, object]:
    """rq job: one leased delivery (jobs queued before batches existed)."""
    counts = deliver_batch([[delivery_id, token]])
    outcome = next((k for k, n in counts.items() if n), "stale")
    return {"delivery_id": delivery_id, "outcome": outcome}


async def _pump(ctx: DeliverContext, tasks: Sequence[SendTask]) -> dict[str, int]:
    """Send ``tasks`` and whatever follows them; returns the count of each outcome."""
    started = time.monotonic()
    running: dict[asyncio.Task[AttemptResult], SendTask] = {}
    counts: dict[str, int] = {}
    others_wait, looked = False, float("-inf")

    def launch(batch: Sequence[SendTask]) -> None:
        for task in batch:
            running[asyncio.create_task(_post(ctx, task))] = task

    launch(tasks)
    while running:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if len(done) < len(running):
            done, _ = await asyncio.wait(running, timeout=RECORD_WINDOW)
        finished = [(running.pop(t), t.result()) for t in done]
        clock = time.monotonic()
        if clock - looked >= QUEUE_LOOK_SECONDS:
            others_wait, looked = ctx.queue.count > 0, clock
        chain = clock - started < CHAIN_SECONDS and not others_wait
        capacity = ctx.settings.webhook_batch - len(running)
        launch(_record(ctx, finished, capacity=capacity, chain=chain, counts=counts))
    return counts


async def _post(ctx: DeliverContext, task: SendTask) -> AttemptResult:
    try:
        return await ctx.sender.send(
            task.url, msg_id=str(task.event_id), body=ctx.bodies[task.event_id],
            secrets=task.secrets, now=utc_now(),
        )  # fmt: skip
    except Exception as exc:
        # A fault of ours, not the subscriber's: logged, and recorded as a failed attempt so
        # that the rest of the batch is recorded and this delivery is retried on schedule.
        log.exception("webhook.send_failed delivery_id=%d", task.delivery_id)
        detail = f"{type(exc).__name__}: {exc}"[:300]
        return AttemptResult(None, 0, error_code="internal_error", error_detail=detail)


def _record(
    ctx: DeliverContext,
    finished: list[tuple[SendTask, AttemptResult]],
    *,
    capacity: int,
    chain: bool,
    counts: dict[str, int],
) -> list[SendTask]:
    """Record ``finished`` and lease what follows for their subscriptions, in one
    transaction; returns the tasks to send now (``chain``), else queues them as a job."""
    rules = policy(ctx.settings)
    outcomes = [
        Outcome(t.delivery_id, t.token, t.subscription_id, r, t.attempts) for t, r in finished
    ]
    with transaction(ctx.sessions) as session:
        settled = attempts.settle(
            session, outcomes=outcomes, now=utc_now(), policy=rules, rng=ctx.rng, limit=capacity
        )
        if chain:
            ctx.read_bodies(session, settled.tasks)
    if not chain:
        enqueue_deliveries(
            ctx.queue, settled.leased, timeout=ctx.settings.webhook_timeout,
            batch=ctx.settings.webhook_batch,
        )  # fmt: skip
    for (task, result), verdict in zip(finished, settled.verdicts, strict=True):
        outcome = "stale" if verdict is None else verdict.status
        counts[outcome] = counts.get(outcome, 0) + 1
        ctx.metrics.add("newsdesk_webhook_deliveries_total", outcome=outcome)
        ctx.metrics.observe("newsdesk_webhook_latency_seconds", result.latency_ms / 1000)
        log.info(
            "webhook.delivered delivery_id=%d event_id=%d subscription_id=%d outcome=%s "
            "status=%s error=%s ms=%d", task.delivery_id, task.event_id, task.subscription_id,
            outcome, result.status_code, result.error_code or "-", result.latency_ms,
        )  # fmt: skip
    ctx.flush_metrics()
    return settled.tasks if chain else []


def make_worker(
    settings: Settings, connection: redis.Redis, name: str | None = None
) -> PromptWorker:
    return PromptWorker(
        [webhook_queue(settings, connection)],
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        maintenance_interval=settings.maintenance_interval,
    )


def work(settings: Settings, *, burst: bool = False, index: int = 0) -> None:
    """Run one delivery process until stopped (``burst``: until the queue is empty)."""
    setup_logging(settings.log_level, f"deliver[{index}]")
    connection = redis_client(settings)
    ctx = build_context(settings, connection)
    install(ctx)
    try:
        worker = make_worker(
            settings, connection, name=f"newsdesk-deliver-{os.uname().nodename}-{os.getpid()}"
        )
        worker.work(burst=burst, logging_level="WARNING")
    finally:
        install(None)
        ctx.close()


def run(settings: Settings, *, burst: bool = False) -> None:
    """Start ``settings.webhook_workers`` delivery processes, restarted if they die."""
    from workers.pool import supervise

    setup_logging(settings.log_level, "deliver")
    if settings.webhook_workers == 1 or burst:
        work(settings, burst=burst)
        return
    supervise(settings, count=settings.webhook_workers, target=_child)


def _child(settings: Settings, index: int) -> None:
    from services.procs import detach_and_die_with_parent

    detach_and_die_with_parent()
    work(settings, index=index)
