"""Scheduling arithmetic: tables with jitter 0 or a seeded rng, and properties over the bounds."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import ConfigError
from services.core.schedule import (
    ScheduleBounds,
    backoff_delay,
    next_poll_after_success,
    publishing_interval,
    should_disable,
    throttle_delay,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MIN = 60.0
HOUR = 3600.0
DAY = 86_400.0
BOUNDS = ScheduleBounds(
    min_interval=5 * MIN,
    max_interval=DAY,
    default_interval=15 * MIN,
    cache_hint_cap=6 * HOUR,
    retry_after_cap=6 * HOUR,
    max_backoff=2 * DAY,
    jitter=0.0,
)
JITTERY = ScheduleBounds(**{**BOUNDS.__dict__, "jitter": 0.1})


def ago(*seconds: float) -> list[datetime]:
    return [NOW - timedelta(seconds=s) for s in seconds]


# ---- publishing_interval ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], 15 * MIN),  # nothing known: the default
        (ago(HOUR), 15 * MIN),  # one time is no rate
        (ago(HOUR, HOUR, HOUR), 15 * MIN),  # one distinct time is no rate
        (ago(2 * HOUR, HOUR), HOUR),  # span to now 2 h / 1 gap = 2 h per item, poll twice
        (ago(*(h * HOUR for h in range(1, 25))), 0.5 * HOUR * 24 / 23),  # hourly feed
        (ago(*(d * DAY for d in range(1, 8))), DAY * 7 / 6 / 2),  # daily feed
        (ago(60, 120, 180, 240), 5 * MIN),  # a minute apart: clamped up to min_interval
        (ago(20 * DAY, 10 * DAY), DAY),  # slow: clamped down to max_interval
        (ago(3 * HOUR, 2 * HOUR, -HOUR, -DAY), 1.5 * HOUR),  # future times ignored
        (ago(3 * HOUR, 2 * HOUR, 31 * DAY, 400 * DAY), 1.5 * HOUR),  # outside the window
        (ago(-HOUR, 40 * DAY), 15 * MIN),  # nothing usable left: default
        # A burst of ten items a day for three days is three batches a day, not one a second.
        (
            ago(*(d * DAY + s for d in range(3) for s in range(0, 10))),
            (2 * DAY + 9) / 29 / 2,
        ),
    ],
    ids=[
        "empty",
        "single",
        "same_time",
        "two",
        "hourly",
        "daily",
        "too_fast",
        "too_slow",
        "future",
        "too_old",
        "none_usable",
        "bursts",
    ],
)
def test_publishing_interval(times: list[datetime], expected: float) -> None:
    assert publishing_interval(times, NOW, BOUNDS) == pytest.approx(expected)


def test_publishing_interval_quiet_feed_slows_down() -> None:
    # The same ten hourly items, seen now and after a week of silence.
    items = [NOW - timedelta(hours=h) for h in range(1, 11)]
    fresh = publishing_interval(items, NOW, BOUNDS)
    quiet = publishing_interval(items, NOW + timedelta(days=7), BOUNDS)
    assert fresh < quiet


def test_publishing_interval_ignores_naive_times_and_takes_a_window() -> None:
    naive = [t.replace(tzinfo=None) for t in ago(3 * HOUR, 2 * HOUR)]
    assert publishing_interval(naive, NOW, BOUNDS) == 15 * MIN
    times = ago(3 * HOUR, 2 * HOUR, 5 * DAY)
    assert publishing_interval(times, NOW, BOUNDS, window=timedelta(days=1)) == 1.5 * HOUR


def test_default_interval_is_clamped() -> None:
    odd = ScheduleBounds(**{**BOUNDS.__dict__, "default_interval": 10.0})
    assert publishing_interval([], NOW, odd) == 5 * MIN


# ---- next_poll_after_success ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "ttl", "cache", "expected"),
    [
        (HOUR, None, None, HOUR),
        (HOUR, 2 * HOUR, None, 2 * HOUR),  # <ttl> raises
        (HOUR, None, 3 * HOUR, 3 * HOUR),  # Cache-Control raises
        (HOUR, 2 * HOUR, 3 * HOUR, 3 * HOUR),  # the larger hint wins
        (HOUR, 10 * MIN, 20 * MIN, HOUR),  # hints never lower
        (HOUR, 30 * DAY, None, 6 * HOUR),  # hint capped at cache_hint_cap
        (HOUR, None, math.inf, 6 * HOUR),
        (HOUR, 0.0, -5.0, HOUR),  # non-positive hints ignored
        (HOUR, math.nan, math.nan, HOUR),  # NaN hints ignored
        (10.0, None, None, 5 * MIN),  # clamped up to min_interval
        (3 * DAY, None, None, DAY),  # clamped down to max_interval
        (math.inf, None, None, DAY),
        (math.nan, None, None, 15 * MIN),  # unusable interval: the default
    ],
)
def test_next_poll_without_jitter(
    interval: float, ttl: float | None, cache: float | None, expected: float
) -> None:
    at = next_poll_after_success(
        NOW,
        interval=interval,
        ttl_seconds=ttl,
        cache_lifetime=cache,
        bounds=BOUNDS,
        rng=random.Random(1),
    )
    assert at == NOW + timedelta(seconds=expected)


def test_hint_cap_above_max_interval_still_ends_at_max() -> None:
    wide = ScheduleBounds(**{**BOUNDS.__dict__, "cache_hint_cap": 7 * DAY})
    at = next_poll_after_success(
        NOW,
        interval=HOUR,
        ttl_seconds=3 * DAY,
        cache_lifetime=None,
        bounds=wide,
        rng=random.Random(1),
    )
    assert at == NOW + timedelta(seconds=DAY)


def test_next_poll_jitter_is_seeded_and_spread() -> None:
    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [
            (
                next_poll_after_success(
                    NOW,
                    interval=HOUR,
                    ttl_seconds=None,
                    cache_lifetime=None,
                    bounds=JITTERY,
                    rng=rng,
                )
                - NOW
            ).total_seconds()
            for _ in range(500)
        ]

    first = delays(7)
    assert first == delays(7)  # reproducible
    assert all(0.9 * HOUR <= d <= 1.1 * HOUR for d in first)
    assert min(first) < 0.92 * HOUR and max(first) > 1.08 * HOUR  # actually spread
    assert sum(first) / len(first) == pytest.approx(HOUR, rel=0.02)


# ---- backoff_delay --------------------------------------------------------------------------


class _Fixed(random.Random):
    """An rng whose ``random()`` is always ``value``: 0 gives the lower edge, ~1 the upper."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("errors", "low", "high"),
    [
        (1, 0.5 * HOUR, HOUR),  # equal jitter: [step/2, step]
        (2, HOUR, 2 * HOUR),
        (3, 2 * HOUR, 4 * HOUR),
        (5, 8 * HOUR, 16 * HOUR),
        (6, 16 * HOUR, 32 * HOUR),
        (7, DAY, 2 * DAY),  # a 64 h step capped at max_backoff = 48 h
        (10_000, DAY, 2 * DAY),  # no overflow
    ],
)
def test_backoff_edges(errors: int, low: float, high: float) -> None:
    assert backoff_delay(errors, interval=HOUR, bounds=BOUNDS, rng=_Fixed(0.0)) == low
    assert backoff_delay(errors, interval=HOUR, bounds=BOUNDS, rng=_Fixed(1.0)) == high


def test_backoff_is_never_below_min_interval() -> None:
    # interval 10 s is first clamped to 300 s; a 400 s step's lower half would be 200 s.
    tight = ScheduleBounds(**{**BOUNDS.__dict__, "min_interval": 400.0})
    assert backoff_delay(1, interval=10.0, bounds=tight, rng=_Fixed(0.0)) == 400.0
    assert backoff_delay(1, interval=10.0, bounds=BOUNDS, rng=_Fixed(0.0)) == 5 * MIN


def test_backoff_seeded_values() -> None:
    rng = random.Random(42)
    got = [backoff_delay(n, interval=HOUR, bounds=BOUNDS, rng=rng) for n in (1, 2, 3)]
    expected_rng = random.Random(42)
    steps = (HOUR, 2 * HOUR, 4 * HOUR)
    assert got == [s / 2 + expected_rng.uniform(0, s / 2) for s in steps]


def test_backoff_rejects_zero_errors() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        backoff_delay(0, interval=HOUR, bounds=BOUNDS, rng=random.Random(0))


# ---- throttle_delay -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "interval", "expected"),
    [
        (120.0, HOUR, 5 * MIN),  # never sooner than min_interval
        (2 * HOUR, HOUR, 2 * HOUR),  # honoured
        (10 * MIN, HOUR, 10 * MIN),  # a shorter Retry-After than the interval is honoured
        (3 * DAY, HOUR, 6 * HOUR),  # capped at retry_after_cap
        (math.inf, HOUR, 6 * HOUR),
        (None, HOUR, HOUR),  # absent: the regular pace
        (None, 10.0, 5 * MIN),  # ... within the bounds
        (None, 3 * DAY, DAY),
        (-1.0, HOUR, HOUR),  # unusable: as if absent
        (math.nan, HOUR, HOUR),
    ],
)
def test_throttle_delay(retry_after: float | None, interval: float, expected: float) -> None:
    assert throttle_delay(retry_after, interval=interval, bounds=BOUNDS) == expected


def test_retry_after_cap_below_min_interval_still_waits_min_interval() -> None:
    low_cap = ScheduleBounds(**{**BOUNDS.__dict__, "retry_after_cap": 60.0})
    assert throttle_delay(HOUR, interval=HOUR, bounds=low_cap) == 5 * MIN


# ---- should_disable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_error_ago", "errors", "expected"),
    [
        (None, 10, False),  # not failing
        (8 * DAY, 10, True),  # a week of errors, many of them
        (7 * DAY, 5, True),  # exactly at both thresholds
        (7 * DAY - 1, 5, False),  # not long enough
        (30 * DAY, 4, False),  # long, but one backoff gap after a few errors is no outage
        (HOUR, 100, False),  # many errors, but short
    ],
)
def test_should_disable(first_error_ago: float | None, errors: int, expected: bool) -> None:
    first = None if first_error_ago is None else NOW - timedelta(seconds=first_error_ago)
    assert should_disable(first, NOW, disable_after=7 * DAY, error_count=errors) is expected


def test_should_disable_min_errors_is_configurable() -> None:
    first = NOW - timedelta(days=8)
    assert should_disable(first, NOW, disable_after=7 * DAY, error_count=3, min_errors=3)


# ---- ScheduleBounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"min_interval": 0.0},
        {"min_interval": 2 * DAY},  # above max_interval
        {"max_backoff": 60.0},  # below min_interval
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"cache_hint_cap": -1.0},
        {"max_interval": math.inf},
        {"default_interval": math.nan},
    ],
)
def test_bounds_are_validated(change: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ScheduleBounds(**{**BOUNDS.__dict__, **change})


# ---- properties -----------------------------------------------------------------------------

seconds = st.floats(min_value=1.0, max_value=30 * DAY)
anything = st.floats(allow_nan=True, allow_infinity=True)
hints = st.none() | anything


@st.composite
def bounds_strategy(draw: st.DrawFn) -> ScheduleBounds:
    low = draw(seconds)
    high = draw(st.floats(min_value=low, max_value=60 * DAY))
    return ScheduleBounds(
        min_interval=low,
        max_interval=high,
        default_interval=draw(st.floats(min_value=0.0, max_value=60 * DAY)),
        cache_hint_cap=draw(st.floats(min_value=0.0, max_value=60 * DAY)),
        retry_after_cap=draw(st.floats(min_value=0.0, max_value=60 * DAY)),
        max_backoff=draw(st.floats(min_value=low, max_value=90 * DAY)),
        jitter=draw(st.floats(min_value=0.0, max_value=0.5)),
    )


@settings(max_examples=200, deadline=None)
@given(bounds_strategy(), anything, hints, hints, st.integers(0, 2**32))
def test_next_poll_always_within_bounds(
    bounds: ScheduleBounds, interval: float, ttl: float | None, cache: float | None, seed: int
) -> None:
    at = next_poll_after_success(
        NOW,
        interval=interval,
        ttl_seconds=ttl,
        cache_lifetime=cache,
        bounds=bounds,
        rng=random.Random(seed),
    )
    low = NOW + timedelta(seconds=bounds.min_interval * (1 - bounds.jitter))
    high = NOW + timedelta(seconds=bounds.max_interval * (1 + bounds.jitter))
    assert low <= at <= high


@settings(max_examples=200, deadline=None)
@given(bounds_strategy(), anything, st.integers(1, 5000), st.integers(0, 2**32))
def test_backoff_within_min_and_max_backoff(
    bounds: ScheduleBounds, interval: float, errors: int, seed: int
) -> None:
    delay = backoff_delay(errors, interval=interval, bounds=bounds, rng=random.Random(seed))
    assert bounds.min_interval <= delay <= bounds.max_backoff


@settings(max_examples=50, deadline=None)
@given(bounds_strategy(), seconds, st.integers(1, 40))
def test_backoff_is_monotone_in_expectation(
    bounds: ScheduleBounds, interval: float, errors: int
) -> None:
    # For any one draw the delay is non-decreasing in n, so the mean is too: checked on both
    # edges and on sample means over the same draws.
    for value in (0.0, 0.999999):
        now_ = backoff_delay(errors, interval=interval, bounds=bounds, rng=_Fixed(value))
        after = backoff_delay(errors + 1, interval=interval, bounds=bounds, rng=_Fixed(value))
        assert now_ <= after

    def mean(n: int) -> float:
        rng = random.Random(1234)  # the same draws for n and n + 1 (a coupling)
        return sum(backoff_delay(n, interval=interval, bounds=bounds, rng=rng) for _ in range(64))

    assert mean(errors) <= mean(errors + 1)


@settings(max_examples=200, deadline=None)
@given(
    bounds_strategy(),
    st.lists(
        st.floats(-2 * DAY, 40 * DAY).map(lambda s: NOW - timedelta(seconds=s))  # near now
        | st.datetimes(datetime(2000, 1, 1), datetime(2050, 1, 1), timezones=st.just(UTC))
        | st.datetimes(datetime(2000, 1, 1), datetime(2050, 1, 1)),  # naive
        max_size=60,
    ),
)
def test_publishing_interval_within_bounds(bounds: ScheduleBounds, times: list[datetime]) -> None:
    assert bounds.min_interval <= publishing_interval(times, NOW, bounds) <= bounds.max_interval


@settings(max_examples=200, deadline=None)
@given(bounds_strategy(), hints, anything)
def test_throttle_delay_caps_retry_after(
    bounds: ScheduleBounds, retry_after: float | None, interval: float
) -> None:
    delay = throttle_delay(retry_after, interval=interval, bounds=bounds)
    assert delay >= bounds.min_interval
    assert delay <= max(bounds.retry_after_cap, bounds.max_interval, bounds.min_interval)
    if retry_after is not None and retry_after >= 0:
        assert delay <= max(bounds.retry_after_cap, bounds.min_interval)
