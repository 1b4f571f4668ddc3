"""When to poll a feed next: publishing rate, cache hints, jitter, backoff, throttling, disabling.

Pure arithmetic: the caller passes ``now`` (aware UTC) and an ``rng``, so every decision is
reproducible in a table test. All durations are seconds (``float``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from services.core.errors import ConfigError

#: Publication times older than this say nothing about the feed's current pace.
RATE_WINDOW = timedelta(days=30)
#: Polls per expected new item: polling at half the expected gap finds an item, on average,
#: a quarter-gap after it appears, at twice the minimum request count.
POLLS_PER_ITEM = 2.0


@dataclass(frozen=True)
class ScheduleBounds:
    """The operator's scheduling settings, in seconds.

    Attributes:
        min_interval: shortest gap between two polls of a feed (before jitter).
        max_interval: longest gap between two successful polls (before jitter).
        default_interval: the interval of a feed whose publishing rate is unknown.
        cache_hint_cap: how far ``<ttl>`` / ``Cache-Control`` / ``Expires`` may push a poll.
        retry_after_cap: the longest ``Retry-After`` honoured.
        max_backoff: the longest wait after consecutive errors.
        jitter: multiplicative jitter, the next poll lands within ``±jitter`` of its delay.
    """

    min_interval: float
    max_interval: float
    default_interval: float
    cache_hint_cap: float
    retry_after_cap: float
    max_backoff: float
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in astuple(self)):
            raise ConfigError(f"schedule bounds must be finite: {self}")
        if not 0 < self.min_interval <= self.max_interval:
            raise ConfigError(f"need 0 < min_interval <= max_interval: {self}")
        if self.max_backoff < self.min_interval:
            raise ConfigError(f"max_backoff must be at least min_interval: {self}")
        if min(self.default_interval, self.cache_hint_cap, self.retry_after_cap) < 0:
            raise ConfigError(f"intervals and caps must not be negative: {self}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"jitter must be in [0, 1): {self}")

    def clamp(self, seconds: float) -> float:
        """``seconds`` within [min_interval, max_interval]; NaN counts as the default."""
        if math.isnan(seconds):
            seconds = self.default_interval
        return min(max(seconds, self.min_interval), self.max_interval)


def publishing_interval(
    item_times: Sequence[datetime],
    now: datetime,
    bounds: ScheduleBounds,
    *,
    window: timedelta = RATE_WINDOW,
) -> float:
    """The polling interval that suits how often the feed publishes.

    The estimator is the mean gap between distinct publication times *measured up to now*:
    ``(now - oldest) / (distinct_times - 1)``. Unlike the median gap it is not fooled by items
    published in a burst (ten items within a minute once a day is one new batch a day, not one
    a minute), and because the span runs to ``now`` a feed that has gone quiet slows down by
    itself. The window keeps a single ancient item from dragging the estimate out.

    Args:
        item_times: publication times of the feed's items (aware; naive ones are ignored).
        now: the current time, aware UTC.
        bounds: the operator's settings.
        window: times older than ``now - window`` are ignored; future times always are.

    Returns:
        Seconds between polls, ``POLLS_PER_ITEM`` polls per expected item, clamped to
        [min_interval, max_interval]; the clamped default when fewer than two usable times.
    """
    oldest_allowed = now - window
    distinct = {t for t in item_times if t.utcoffset() is not None and oldest_allowed <= t <= now}
    if len(distinct) < 2:
        return bounds.clamp(bounds.default_interval)
    span = (now - min(distinct)).total_seconds()
    return bounds.clamp(span / (len(distinct) - 1) / POLLS_PER_ITEM)


def next_poll_after_success(
    now: datetime,
    *,
    interval: float,
    ttl_seconds: float | None,
    cache_lifetime: float | None,
    bounds: ScheduleBounds,
    rng: random.Random,
) -> datetime:
    """When to poll again after a successful fetch.

    The feed's own ``<ttl>`` and the HTTP cache lifetime (``Cache-Control: max-age`` or
    ``Expires``) may only lengthen the interval, each first capped at ``cache_hint_cap``; a
    missing, non-positive or NaN hint is ignored. The result is clamped to
    [min_interval, max_interval] and then jittered, so it always lies within
    ``[now + min*(1-jitter), now + max*(1+jitter)]``.
    """
    delay = bounds.default_interval if math.isnan(interval) else interval
    for hint in (ttl_seconds, cache_lifetime):
        if hint is not None and hint > 0:  # NaN compares false
            delay = max(delay, min(hint, bounds.cache_hint_cap))
    return now + timedelta(seconds=_jittered(bounds.clamp(delay), bounds, rng))


def backoff_delay(
    error_count: int, *, interval: float, bounds: ScheduleBounds, rng: random.Random
) -> float:
    """Seconds to wait after the ``error_count``-th consecutive error (``error_count >= 1``).

    Exponential from the feed's interval (``interval * 2**(n-1)``) capped at ``max_backoff``,
    with "equal jitter": half the step is kept, the other half drawn uniformly. Full jitter
    spreads retries wider but may retry a broken server almost at once; equal jitter keeps the
    delay growing (its lower edge doubles too) while still de-synchronising feeds that broke
    together. Never below ``min_interval``, never above ``max_backoff``.

    Raises:
        ValueError: ``error_count`` below 1.
    """
    if error_count < 1:
        raise ValueError(f"error_count must be at least 1, got {error_count}")
    base = bounds.clamp(interval)
    # 2.0 ** 1023 is the largest finite power; an overflowing product becomes inf, then the cap.
    step = min(base * 2.0 ** min(error_count - 1, 1023), bounds.max_backoff)
    half = step / 2
    # uniform(a, b) may land an ulp past b; the cap promise is exact.
    return max(min(half + rng.uniform(0, half), step), bounds.min_interval)


def throttle_delay(retry_after: float | None, *, interval: float, bounds: ScheduleBounds) -> float:
    """Seconds to wait after a 429 or 503, which is throttling, not failure.

    A ``Retry-After`` is honoured up to ``retry_after_cap`` and never below ``min_interval``
    (``max(min(retry_after, cap), min_interval)``); a shorter wait than the feed's interval is
    allowed, since the server said when it will answer and this poll brought nothing. Without
    a usable header the feed keeps its regular pace (``interval`` clamped to the bounds);
    escalating repeated header-less throttling is the caller's choice (e.g. ``backoff_delay``).
    """
    if retry_after is None or math.isnan(retry_after) or retry_after < 0:
        return bounds.clamp(interval)
    return max(min(retry_after, bounds.retry_after_cap), bounds.min_interval)


def should_disable(
    first_error_at: datetime | None,
    now: datetime,
    *,
    disable_after: float,
    error_count: int,
    min_errors: int = 5,
) -> bool:
    """Whether a failing feed is in a sustained outage and should be disabled.

    Both must hold: errors for at least ``disable_after`` seconds since the first of the
    current run, and at least ``min_errors`` consecutive errors, so that one long backoff gap
    after a couple of errors is not taken for an outage.
    """
    if first_error_at is None or error_count < min_errors:
        return False
    return (now - first_error_at).total_seconds() >= disable_after


def _jittered(seconds: float, bounds: ScheduleBounds, rng: random.Random) -> float:
    """``seconds`` times a uniform factor in ``[1 - jitter, 1 + jitter]`` (clamped: ``uniform``
    may land an ulp outside its range, and the bounds promise is exact)."""
    low, high = 1 - bounds.jitter, 1 + bounds.jitter
    factor = min(max(rng.uniform(low, high), low), high)
    return seconds * factor
