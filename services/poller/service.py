"""The poller: claim due sources, fetch or scan them, enqueue new and changed items."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from services import dataversion
from services.config import Settings
from services.core.errors import NewsdeskError
from services.core.records import FeedRecord
from services.db import feeds
from services.db.engine import transaction
from services.fetch import FetchResult, HTTPStatusError, SupportsFetch
from services.metrics import Recorder
from services.poller.health import CycleStats, FeedHealth, PollOutcome, host_of
from services.poller.pages import PageFetcher
from services.poller.payloads import feed_payload, file_payload
from services.poller.politeness import HostBusy, Politeness
from services.poller.reconcile import Reconciler
from services.poller.writer import GroupWriter
from services.queue import (
    REDIS_MEMORY_HIGH_WATER,
    backlog,
    enqueue_extract,
)
from services.sources.feed import FeedItem, ParsedFeed, parse_feed
from services.sources.folder import FolderEntry, scan_folder

log = logging.getLogger("newsdesk.poller")

FOLDER_PREFIX = "folder:"
CLAIM_LIMIT = 500  # feeds of one kind taken per cycle
# A claimed feed is not due again before this, so an overlapping cycle or a second poller
# skips it; a poller that dies mid-poll leaves the feed to be retried once the lease ends.
LEASE = timedelta(minutes=10)
# A live poll takes at most about this many HTTP timeouts (a wait for its host, the feed,
# then its article pages a few at a time).
LEASE_TIMEOUTS = 30
# A poll that failed on our side of Redis (the queue went away mid-poll) is due again after
# this instead of its whole lease: a restarted Redis delays its feeds by seconds, not
# minutes. While Redis is still down the next cycle fails before claiming, so the
# publisher is not fetched again in the meantime.
QUEUE_RETRY = timedelta(seconds=5)
# How long one poll may wait for its host's turn before it is put off to a later cycle.
HOST_MAX_WAIT = 5.0
# On SIGTERM a cycle in progress gets this long to finish before it is abandoned (within
# docker's default 10 s stop timeout).
STOP_GRACE = 5.0
THROTTLE_STATUSES = frozenset({429, 503})


PollFunc = Callable[[FeedRecord, datetime], Awaitable[PollOutcome]]


class Poller:
    """One poller process's work; every blocking call runs in a thread.

    Args:
        politeness: the per-host gate shared with other pollers (None: no gate, for tests of
            other behaviour).
        page_fetcher: fetches article pages (built with ``pages.page_settings``) for items
            without full text, per the feed's ``fulltext`` mode (None: no page is fetched).
        rng: source of scheduling jitter (seed it for reproducible tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: sessionmaker[Session],
        queue: Queue,
        fetcher: SupportsFetch,
        politeness: Politeness | None = None,
        page_fetcher: SupportsFetch | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._queue = queue
        self._fetcher = fetcher
        self._gate = politeness
        self._writer = GroupWriter(sessions)
        self._metrics = Recorder(queue.connection)
        self._health = FeedHealth(settings, writer=self._writer, politeness=politeness,
                                  rng=rng or random.Random(),
                                  shown_changed=self._shown_changed)  # fmt: skip
        self._limit = asyncio.Semaphore(settings.fetch_concurrency)
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poller-parse")
        self._reconciler = Reconciler(
            sessions, queue, sweep_interval=settings.sweep_interval, metrics=self._metrics
        )
        self._pages = None if page_fetcher is None else PageFetcher(
            page_fetcher, gate=politeness, executor=self._cpu,
            throttle_cap=settings.retry_after_cap,
        )  # fmt: skip

    def _shown_changed(self) -> None:
        """A committed change to a feed field that article answers show (its URL or title):
        the API's cached answers are stale (the data version goes with the cycle's metrics)."""
        self._metrics.touch(dataversion.KEY)

    async def ensure_folder_feed(self, now: datetime) -> FeedRecord | None:
        """Register ``settings.seeds_dir`` as the folder source when it exists."""
        seeds = self._settings.seeds_dir
        if seeds is None or not seeds.is_dir():
            return None
        interval = max(1, math.ceil(self._settings.folder_interval))
        return await asyncio.to_thread(
            self._in_tx, feeds.ensure_feed, url=FOLDER_PREFIX + str(seeds), kind="folder",
            interval_seconds=interval, now=now,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_tick`` seconds until ``stop`` is set; a failed cycle is logged."""
        while not stop.is_set():
            try:
                await self._cycle(stop)
            except Exception:
                log.exception("poller.cycle_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.poll_tick)

    async def _cycle(self, stop: asyncio.Event) -> None:
        """One ``run_once``; once ``stop`` is set it has ``STOP_GRACE`` seconds to finish.

        A cycle still running then is cancelled. Nothing is lost: its feeds stay claimed
        until their lease ends and are then claimed again by any poller, validators are
        stored only after a poll's jobs are queued, and a job queued twice is one job.
        """
        cycle = asyncio.create_task(self.run_once(datetime.now(UTC)))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({cycle, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not cycle.done():
                await asyncio.wait({cycle}, timeout=STOP_GRACE)
            if not cycle.done():
                log.warning("poller.cycle_abandoned grace_s=%.0f", STOP_GRACE)
                cycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
                return
            await cycle  # its exception, if it failed
        finally:
            stopping.cancel()

    async def run_once(self, now: datetime) -> CycleStats:
        """Claim the due sources of both kinds and poll them; one source's failure is its own.

        While the extraction queue is at its high-water mark, or Redis is near its
        ``maxmemory``, nothing is claimed: the sources stay due and are polled once the
        workers have caught up, so nothing is lost. Each cycle first repairs work Redis lost
        (``reconcile.py``).
        """
        await asyncio.to_thread(self._reconciler.run, now)
        depth, memory = await asyncio.to_thread(backlog, self._queue)
        if depth >= self._settings.queue_high_water or (memory or 0) >= REDIS_MEMORY_HIGH_WATER:
            log.warning("poller.backpressure queued=%d high_water=%d redis_memory=%s", depth,
                        self._settings.queue_high_water,
                        "n/a" if memory is None else f"{memory:.0%}")  # fmt: skip
            return CycleStats(backpressure=1)
        http_due = await self._claim("http", now)
        folder_due = await self._claim("folder", now)
        results = await asyncio.gather(
            *(self._guarded(self._poll_http, feed, now) for feed in http_due),
            *(self._guarded(self._poll_folder, feed, now) for feed in folder_due),
        )
        await asyncio.to_thread(self._metrics.flush)
        return sum(results, CycleStats())

    # -- one source ------------------------------------------------------------------------

    async def _guarded(self, poll: PollFunc, feed: FeedRecord, now: datetime) -> CycleStats:
        async with self._limit:
            started = time.monotonic()
            try:
                stats, status, http, size = await self._attempt(poll, feed, now)
            except Exception as exc:
                # Not the source's fault (database, Redis): no error is recorded against it.
                log.exception("feed.poll_failed feed_id=%d", feed.id)
                self._metrics.add("newsdesk_polls_total", kind=feed.kind, outcome="failed")
                if isinstance(exc, redis.RedisError):
                    await self._retry_soon(feed, now)
                return CycleStats(errors=1)
        word = status.split(" ", 1)[0]
        outcome = word if word in POLL_OUTCOMES else "error"
        self._metrics.add("newsdesk_polls_total", kind=feed.kind, outcome=outcome)
        log.info(
            "feed.polled feed_id=%d kind=%s status=%s http=%s new=%d pages=%d pages_failed=%d "
            "bytes=%d ms=%d", feed.id, feed.kind, status, http, stats.enqueued,
            stats.pages_fetched, stats.pages_failed, size, (time.monotonic() - started) * 1000,
        )  # fmt: skip
        return stats

    async def _attempt(self, poll: PollFunc, feed: FeedRecord, now: datetime) -> PollOutcome:
        """Poll one source; a fetch, parse or scan failure is stored on the feed."""
        try:
            return await poll(feed, now)
        except HostBusy as busy:
            return await self._health.deferred(feed, now, busy.delay)
        except HTTPStatusError as exc:
            if exc.status in THROTTLE_STATUSES:
                return await self._health.throttled(feed, now, exc)
            return await self._health.failed(feed, now, exc, exc.status)
        except NewsdeskError as exc:
            return await self._health.failed(feed, now, exc, None)

    async def _fetch(self, feed: FeedRecord) -> FetchResult:
        if self._gate is None:
            return await self._fetcher.fetch(feed.url, etag=feed.etag,
                                             last_modified=feed.last_modified)  # fmt: skip
        async with self._gate.slot(host_of(feed.url), max_wait=HOST_MAX_WAIT):
            return await self._fetcher.fetch(feed.url, etag=feed.etag,
                                             last_modified=feed.last_modified)  # fmt: skip

    async def _poll_http(self, feed: FeedRecord, now: datetime) -> PollOutcome:
        result = await self._fetch(feed)
        if result.permanent_redirect:
            moved = await self._writer.submit(
                feeds.record_moved, feed_id=feed.id, new_url=result.permanent_redirect, now=now
            )
            log.info("feed.moved feed_id=%d to=%s stored=%s", feed.id,
                     result.permanent_redirect, moved)  # fmt: skip
            if moved and result.permanent_redirect != feed.url:
                self._shown_changed()
        size = len(result.body)
        if result.not_modified:
            await self._health.succeeded(feed, now, result)
            return CycleStats(feeds_polled=1, not_modified=1), "not_modified", 304, size
        # CPU-bound work runs on one dedicated thread: many threads parsing at once would
        # fight the event loop for the GIL and stall every other poll in flight.
        body_hash, parsed = await asyncio.get_running_loop().run_in_executor(
            self._cpu, _digest_and_parse, result, feed.body_hash
        )
        if parsed is None:
            await self._health.succeeded(feed, now, result, body_hash=body_hash)
            return CycleStats(feeds_polled=1, unchanged=1), "unchanged", result.status, size
        known = await asyncio.to_thread(self._known, feed.id)
        items = [i for i in parsed.items if known.get(feeds.key_hash(i.item_key)) != i.content_hash]
        fresh, pages = await self._payloads(feed, items)
        enqueued, duplicates = await asyncio.get_running_loop().run_in_executor(
            self._cpu, self._enqueue, fresh
        )
        # Validators and body hash only after the jobs are queued: if Redis failed above, the
        # next poll fetches and parses again instead of believing it has seen this body.
        await self._health.succeeded(feed, now, result, body_hash=body_hash, parsed=parsed)
        stats = CycleStats(
            feeds_polled=1, items_seen=len(parsed.items), enqueued=enqueued,
            already_queued=duplicates,
        )  # fmt: skip
        return stats + pages, "ok", result.status, size

    async def _payloads(
        self, feed: FeedRecord, items: Sequence[FeedItem]
    ) -> tuple[list[dict[str, Any]], CycleStats]:
        """Payloads of new and changed items, with their article pages where wanted."""
        if self._pages is None:
            return [feed_payload(feed.id, item) for item in items], CycleStats()
        return await self._pages.payloads(feed, items)

    async def _poll_folder(self, feed: FeedRecord, now: datetime) -> PollOutcome:
        root = Path(feed.url.removeprefix(FOLDER_PREFIX))
        entries = await asyncio.to_thread(
            scan_folder, root, max_bytes=self._settings.max_file_bytes
        )
        known = await asyncio.to_thread(self._known, feed.id)
        # Same key and hash as last time: already handled, or its error already recorded.
        fresh = [e for e in entries if known.get(feeds.key_hash(e.item_key)) != e.content_hash]
        good = [file_payload(feed.id, e) for e in fresh if e.error_code is None]
        bad = [e for e in fresh if e.error_code is not None]
        enqueued, duplicates = await asyncio.to_thread(self._enqueue, good)
        await asyncio.to_thread(self._record_item_errors, feed.id, bad, now)
        await self._writer.submit(
            feeds.record_success, feed_id=feed.id, now=now, status=None,
            next_poll_at=now + timedelta(seconds=self._settings.folder_interval),
        )  # fmt: skip
        stats = CycleStats(
            feeds_polled=1, files_seen=len(entries), enqueued=enqueued,
            already_queued=duplicates, errors=len(bad),
        )  # fmt: skip
        return stats, "ok", None, sum(len(e.text or "") for e in fresh)

    async def _retry_soon(self, feed: FeedRecord, now: datetime) -> None:
        """Make a feed whose poll Redis failed due after QUEUE_RETRY; if SQL fails too, the
        feed keeps its lease."""
        try:
            await self._writer.submit(feeds.schedule, feed_id=feed.id, when=now + QUEUE_RETRY)
        except Exception:
            log.warning("feed.retry_not_scheduled feed_id=%d", feed.id, exc_info=True)

    # -- blocking helpers (run in threads) --------------------------------------------------

    def _in_tx(self, func: Any, /, **kwargs: Any) -> Any:
        with transaction(self._sessions) as session:
            return func(session, **kwargs)

    async def _claim(self, kind: str, now: datetime) -> list[FeedRecord]:
        claimed: list[FeedRecord] = await asyncio.to_thread(
            self._in_tx, feeds.claim_due_feeds, kind=kind, now=now, limit=CLAIM_LIMIT,
            lease=claim_lease(self._settings),
        )  # fmt: skip
        return claimed

    def _known(self, feed_id: int) -> dict[str, str]:
        with self._sessions() as session:
            return feeds.known_items(session, feed_id=feed_id)

    def _enqueue(self, payloads: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """(accepted, already queued). A duplicate is an overlapping cycle's job, not an error."""
        accepted = 0
        for payload in payloads:
            if enqueue_extract(self._queue, payload, timeout=self._settings.job_timeout):
                accepted += 1
        return accepted, len(payloads) - accepted

    def _record_item_errors(self, feed_id: int, bad: Sequence[FolderEntry], now: datetime) -> None:
        if not bad:
            return
        with transaction(self._sessions) as session:
            for entry in bad:
                feeds.record_item_error(
                    session, feed_id=feed_id, item_key=entry.item_key,
                    content_hash=entry.content_hash, code=entry.error_code or "error",
                    detail=entry.error_detail or "", now=now,
                )  # fmt: skip


def claim_lease(settings: Settings) -> timedelta:
    """How long a claim keeps a feed from other pollers: ``LEASE`` at most, less when the
    feed's longest polling interval is shorter, but never less than a live poll can take.

    A poll that outlives its lease only repeats work (a job queued twice is one job); a
    poller that dies holds its feeds until the lease ends, so the lease bounds how late a
    dead poller makes them.
    """
    floor = LEASE_TIMEOUTS * settings.http_timeout
    return min(LEASE, timedelta(seconds=max(settings.feed_max_interval, floor)))


def _digest_and_parse(
    result: FetchResult, previous_hash: str | None
) -> tuple[str, ParsedFeed | None]:
    """sha256 of the body, and the parsed feed unless the body is byte-identical to last time."""
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == previous_hash:
        return body_hash, None
    parsed = parse_feed(
        result.body, url=result.final_url, content_type=result.headers.get("content-type")
    )
    return body_hash, parsed


# Poll outcomes counted by /metrics; any other status word is a source error.
POLL_OUTCOMES = frozenset({"ok", "not_modified", "unchanged", "throttled", "deferred"})
