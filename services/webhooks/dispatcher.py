"""`newsdesk dispatcher`: fans events out into deliveries and hands due deliveries to workers.

A short loop over SQL, so a flushed Redis or a restart loses nothing: events past the cursor
are fanned out, and deliveries that are due (first attempt, retry, or a lease that ran out)
are leased and queued as batch jobs, spread over the delivery processes; a tick with nothing
to do is one read. Several dispatchers may run: they take turns on the fan-out, and each
hands out only subscriptions that no other transaction holds at that moment.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import fanout, leases
from services.db.engine import make_engine, reading, session_factory, transaction
from services.logs import setup_logging
from services.queue import enqueue_deliveries, redis_client, webhook_queue

log = logging.getLogger("newsdesk.dispatcher")

FAN_OUT_BATCH = 500
HAND_OUT_BATCH = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


def policy(settings: Settings) -> leases.Policy:
    """The delivery rules ``settings`` describe (a lease always outlasts the POST timeout)."""
    return leases.Policy(
        schedule=settings.webhook_schedule,
        concurrency=settings.webhook_concurrency,
        lease=max(float(settings.webhook_lease), settings.webhook_timeout + 1),
        disable_after=settings.webhook_disable_after,
        retry_after_cap=float(settings.retry_after_cap),
    )


@dataclass(frozen=True)
class Tick:
    events: int
    queued: int


class Dispatcher:
    """One dispatcher: ``run_once`` is a tick; ``run`` repeats it until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: sessionmaker[Session],
        queue: Queue,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.queue = queue
        self.clock = clock
        self.policy = policy(settings)

    def run_once(self) -> Tick:
        """Fan out every new event, then lease and queue what is due."""
        with reading(self.sessions) as session:
            waiting = fanout.work_waiting(session, now=self.clock())
        if not waiting:
            return Tick(0, 0)
        events = 0
        while True:
            with transaction(self.sessions) as session:
                read = fanout.fan_out(
                    session, now=self.clock(), schedule=self.policy.schedule, limit=FAN_OUT_BATCH
                )
            events += read
            if read < FAN_OUT_BATCH:
                break
        with transaction(self.sessions) as session:
            leased = leases.hand_out(
                session, now=self.clock(), policy=self.policy, limit=HAND_OUT_BATCH
            )
        # After the commit: a job never runs before its lease is visible. Should this process
        # die right here, the leases run out and the next tick hands the deliveries out again.
        queued = enqueue_deliveries(
            self.queue, leased, timeout=self.settings.webhook_timeout,
            batch=self.settings.webhook_batch, spread=self.settings.webhook_workers,
        )  # fmt: skip
        if events or queued:
            log.info("dispatcher.tick events=%d queued=%d", events, queued)
        return Tick(events, queued)


def run(settings: Settings) -> None:
    """Run the dispatcher loop until SIGTERM or SIGINT."""
    setup_logging(settings.log_level, "dispatcher")
    engine = make_engine(settings.database_url, immediate=True, pool_size=2, role="dispatcher")
    connection = redis_client(settings)
    dispatcher = Dispatcher(
        settings, sessions=session_factory(engine), queue=webhook_queue(settings, connection)
    )
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("dispatcher.ready tick=%.2fs queue=%s", settings.webhook_tick, settings.webhook_queue)
    try:
        while not stopping:
            try:
                dispatcher.run_once()
            except Exception:
                # The database or Redis is away: say so and try again on the next tick.
                log.exception("dispatcher.tick_failed")
                time.sleep(min(5.0, settings.webhook_tick * 10))
            time.sleep(settings.webhook_tick)
    finally:
        connection.close()
        engine.dispose()
    log.info("dispatcher.stopped")
