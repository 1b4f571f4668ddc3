"""A poll's outcome turned into the feed's stored health and its next poll time."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from services.config import Settings
from services.core.errors import NewsdeskError
from services.core.httpdates import parse_cache_lifetime
from services.core.records import FeedRecord
from services.core.schedule import (
    ScheduleBounds,
    backoff_delay,
    next_poll_after_success,
    publishing_interval,
    should_disable,
    throttle_delay,
)
from services.db import feeds
from services.fetch import FetchResult, HTTPStatusError
from services.poller.politeness import Politeness
from services.poller.writer import GroupWriter
from services.sources.feed import ParsedFeed

GONE_STATUS = 410


@dataclass(frozen=True)
class CycleStats:
    """What one poll cycle (or one feed's poll) did. ``errors`` counts failed polls and newly
    recorded item errors."""

    feeds_polled: int = 0
    not_modified: int = 0
    unchanged: int = 0
    items_seen: int = 0
    enqueued: int = 0
    already_queued: int = 0
    errors: int = 0
    files_seen: int = 0
    throttled: int = 0
    deferred: int = 0
    backpressure: int = 0
    pages_fetched: int = 0  # article pages fetched for items without full text
    pages_failed: int = 0  # such pages not fetched (the items went out with their summary)

    def __add__(self, other: CycleStats) -> CycleStats:
        return CycleStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


# One source's poll: (stats, status word for the log line, HTTP status or None, bytes read).
PollOutcome = tuple[CycleStats, str, int | None, int]


def schedule_bounds(settings: Settings) -> ScheduleBounds:
    return ScheduleBounds(
        min_interval=settings.feed_min_interval,
        max_interval=settings.feed_max_interval,
        default_interval=settings.feed_interval,
        cache_hint_cap=settings.cache_hint_cap,
        retry_after_cap=settings.retry_after_cap,
        max_backoff=max(settings.feed_max_interval, settings.feed_min_interval),
    )


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class FeedHealth:
    """Records successes, throttling and failures, and decides when each feed is polled next."""

    def __init__(
        self, settings: Settings, *, writer: GroupWriter, politeness: Politeness | None,
        rng: random.Random, shown_changed: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._writer = writer
        self._gate = politeness
        self._rng = rng
        self._bounds = schedule_bounds(settings)
        # Called after a commit that changed what the API shows with articles (feed title).
        self._shown_changed = shown_changed

    async def _in_tx(self, func: Any, /, **kwargs: Any) -> Any:
        return await self._writer.submit(func, **kwargs)

    async def deferred(self, feed: FeedRecord, now: datetime, delay: float) -> PollOutcome:
        """The host was busy: try again after ``delay``, which is neither failure nor success."""
        when = now + timedelta(seconds=delay + self._rng.uniform(0, 1))
        await self._in_tx(feeds.schedule, feed_id=feed.id, when=when)
        return CycleStats(deferred=1), "deferred", None, 0

    async def throttled(self, feed: FeedRecord, now: datetime, exc: HTTPStatusError) -> PollOutcome:
        delay = throttle_delay(exc.retry_after_seconds, interval=feed.interval_seconds,
                               bounds=self._bounds)  # fmt: skip
        if self._gate is not None:
            await self._gate.slow_down(host_of(feed.url), delay)
        await self._in_tx(
            feeds.record_throttled, feed_id=feed.id, now=now, status=exc.status,
            until=now + timedelta(seconds=delay), detail=exc.detail,
        )  # fmt: skip
        return CycleStats(feeds_polled=1, throttled=1), f"throttled s={delay:.0f}", exc.status, 0

    async def failed(
        self, feed: FeedRecord, now: datetime, exc: NewsdeskError, status: int | None
    ) -> PollOutcome:
        count = feed.error_count + 1
        reason = None
        if status == GONE_STATUS:
            reason = "gone"
        elif should_disable(feed.first_error_at or now, now, error_count=count,
                            disable_after=self._settings.disable_after):  # fmt: skip
            reason = "outage"
        delay = backoff_delay(count, interval=feed.interval_seconds, bounds=self._bounds,
                              rng=self._rng)  # fmt: skip
        await self._in_tx(
            feeds.record_error, feed_id=feed.id, now=now, code=exc.code,
            detail=exc.detail, status=status, next_poll_at=now + timedelta(seconds=delay),
            disable_reason=reason,
        )  # fmt: skip
        word = f"error code={exc.code}" + (f" disabled={reason}" if reason else "")
        return CycleStats(feeds_polled=1, errors=1), word, status, 0

    async def succeeded(
        self, feed: FeedRecord, now: datetime, result: FetchResult, *,
        body_hash: str | None = None, parsed: ParsedFeed | None = None,
    ) -> None:  # fmt: skip
        interval = float(feed.interval_override or feed.interval_seconds)
        ttl = feed.ttl_seconds
        if parsed is not None:
            ttl = int(parsed.ttl_seconds) if parsed.ttl_seconds else None
            if feed.interval_override is None:
                times = [item.published for item in parsed.items if item.published]
                interval = publishing_interval(times, now, self._bounds)
        next_poll = next_poll_after_success(
            now, interval=interval, ttl_seconds=ttl,
            cache_lifetime=parse_cache_lifetime(result.headers, now), bounds=self._bounds,
            rng=self._rng,
        )  # fmt: skip
        await self._in_tx(
            feeds.record_success, feed_id=feed.id, now=now, status=result.status,
            next_poll_at=next_poll, interval_seconds=round(interval), etag=result.etag,
            last_modified=result.last_modified, body_hash=body_hash, ttl_seconds=ttl,
            title=parsed.title if parsed else None, site_url=parsed.site_url if parsed else None,
        )  # fmt: skip
        title = feeds.stored_title(parsed.title) if parsed else None
        if title is not None and title != feed.title:
            self._shown_changed()
