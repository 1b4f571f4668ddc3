"""What an attempt's outcome means for a delivery: done, retry when, or give up. Pure.

The schedule is a list of delays in seconds before each attempt (the first one is the delay
of the first attempt, normally 0). Retries are jittered by up to 10% either way, so that a
subscriber coming back from an outage is not hit by every retry at the same instant, and a
``Retry-After`` (429, 503) pushes the next attempt at least that far.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

JITTER = 0.10


@dataclass(frozen=True)
class AttemptResult:
    """What one POST produced. ``status_code`` is None when no HTTP answer came back."""

    status_code: int | None
    latency_ms: int
    error_code: str | None = None
    error_detail: str | None = None
    excerpt: str | None = None
    retry_after_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Verdict:
    """``status``: succeeded, failed (retry at ``next_attempt_at``) or dead; ``gone``: the
    subscriber answered 410 and the subscription must be disabled."""

    status: str
    next_attempt_at: datetime | None = None
    gone: bool = False


def jittered(delay: float, rng: random.Random) -> float:
    return max(0.0, delay * (1 + rng.uniform(-JITTER, JITTER)))


def judge(
    result: AttemptResult,
    *,
    attempts: int,
    schedule: Sequence[float],
    now: datetime,
    rng: random.Random,
    retry_after_cap: float,
) -> Verdict:
    """The delivery's next state after its ``attempts``-th attempt ended with ``result``."""
    if result.ok:
        return Verdict("succeeded")
    if result.status_code == 410:
        return Verdict("dead", gone=True)
    if attempts >= len(schedule):
        return Verdict("dead")
    delay = jittered(schedule[attempts], rng)
    if result.retry_after_seconds is not None:
        delay = max(delay, min(result.retry_after_seconds, retry_after_cap))
    return Verdict("failed", next_attempt_at=now + timedelta(seconds=delay))


def first_attempt_at(schedule: Sequence[float], now: datetime) -> datetime:
    """When a new delivery is first due (the schedule's first delay, unjittered)."""
    return now + timedelta(seconds=schedule[0] if schedule else 0)
