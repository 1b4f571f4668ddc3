"""`newsdesk deliver`: webhook delivery processes (no spaCy model), and the rq job they run.

Each process runs rq's SimpleWorker on the webhook queue and keeps one event loop and one
HTTP session (connections to subscribers stay open between deliveries). A job POSTs one
delivery, records the attempt in SQL and, in the same transaction, leases the subscription's
next due delivery, so a backlog drains at the subscriber's pace, not at the dispatcher's tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.errors import ConfigError
from services.db import deliveries
from services.db.engine import make_engine, session_factory, transaction
from services.logs import setup_logging
from services.queue import enqueue_deliveries, redis_client, webhook_queue
from services.webhooks.dispatcher import policy
from services.webhooks.payload import body
from services.webhooks.sender import Sender

log = logging.getLogger("newsdesk.deliver")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class DeliverContext:
    """What delivery jobs share within one process."""

    settings: Settings
    writes: sessionmaker[Session]
    reads: sessionmaker[Session]
    queue: Queue
    loop: asyncio.AbstractEventLoop
    sender: Sender
    rng: random.Random = field(default_factory=random.Random)

    def close(self) -> None:
        self.loop.run_until_complete(self.sender.__aexit__(None, None, None))
        self.loop.close()


def build_context(settings: Settings, connection: redis.Redis) -> DeliverContext:
    writes = session_factory(make_engine(settings.database_url, immediate=True, pool_size=2))
    reads = session_factory(make_engine(settings.database_url, immediate=False, pool_size=2))
    loop = asyncio.new_event_loop()
    sender = loop.run_until_complete(Sender(settings).__aenter__())
    return DeliverContext(
        settings=settings, writes=writes, reads=reads,
        queue=webhook_queue(settings, connection), loop=loop, sender=sender,
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


def deliver(delivery_id: int, token: int) -> dict[str, object]:
    """rq job: POST one leased delivery and record what happened."""
    ctx = current()
    with ctx.reads() as session:
        task = deliveries.send_task(
            session, delivery_id=int(delivery_id), token=int(token), now=utc_now()
        )
    if task is None:
        return {"delivery_id": delivery_id, "outcome": "stale"}
    document = body(
        task.event_type, task.event_created_at, task.payload, public_url=ctx.settings.public_url
    )
    result = ctx.loop.run_until_complete(
        ctx.sender.send(
            task.url, msg_id=str(task.event_id), body=document, secrets=task.secrets,
            now=utc_now(),
        )
    )  # fmt: skip
    rules = policy(ctx.settings)
    with transaction(ctx.writes) as session:
        now = utc_now()
        verdict = deliveries.record_attempt(
            session, delivery_id=task.delivery_id, token=task.token, result=result, now=now,
            policy=rules, rng=ctx.rng,
        )  # fmt: skip
        following = deliveries.hand_out(
            session, now=now, policy=rules, limit=rules.concurrency,
            subscription_id=task.subscription_id,
        )  # fmt: skip
    enqueue_deliveries(ctx.queue, following, timeout=ctx.settings.webhook_timeout)
    outcome = "stale" if verdict is None else verdict.status
    log.info(
        "webhook.delivered delivery_id=%d event_id=%d subscription_id=%d outcome=%s status=%s "
        "error=%s ms=%d", task.delivery_id, task.event_id, task.subscription_id, outcome,
        result.status_code, result.error_code or "-", result.latency_ms,
    )  # fmt: skip
    return {"delivery_id": task.delivery_id, "outcome": outcome, "status": result.status_code}


def make_worker(
    settings: Settings, connection: redis.Redis, name: str | None = None
) -> SimpleWorker:
    return SimpleWorker(
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
