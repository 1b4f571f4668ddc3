"""Prometheus metrics across processes: counters in one Redis hash, gauges read at scrape time.

Every role runs in its own processes (and possibly on several hosts), so a counter kept in
one process's memory would show a fraction of the work. Each process buffers its counter
increments (:class:`Recorder`) and adds them to the Redis hash ``newsdesk:metrics`` in one
round trip per unit of work (a worker's job, a poller's cycle, a delivery batch). The API's
``/metrics`` renders that hash together with gauges read at scrape time from SQL (feeds by
state, entities, deliveries by status) and Redis (queue depths and ages).

A field of the hash is one sample: ``name`` or ``name{label="value",...}``, as Prometheus
writes it. Histograms are stored as their cumulative ``_bucket``, ``_sum`` and ``_count``
samples. Counters restart from zero if Redis loses its data; Prometheus' ``rate()`` treats
that as a counter reset.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

log = logging.getLogger("newsdesk.metrics")

KEY = "newsdesk:metrics"
# Seconds: from a fast job or POST to the webhook timeout.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Family:
    """One metric family: its name, Prometheus type and help text."""

    name: str
    type: str  # counter | gauge | histogram
    help: str


FAMILIES = {
    f.name: f
    for f in (
        Family("newsdesk_polls_total", "counter", "Source polls by outcome."),
        Family(
            "newsdesk_poll_not_modified_ratio",
            "gauge",
            "Share of HTTP polls answered 304 Not Modified since the counters started.",
        ),
        Family(
            "newsdesk_items_total",
            "counter",
            "Extraction jobs by outcome: created, duplicate, updated, unchanged, error.",
        ),
        Family("newsdesk_reprocessed_total", "counter", "Reprocessing jobs by outcome."),
        Family("newsdesk_job_duration_seconds", "histogram", "Worker job durations by kind."),
        Family(
            "newsdesk_worker_batch_cpu_seconds_total",
            "counter",
            "CPU seconds of worker batches by phase: lookups, extract, sketch, ner, entities, "
            "store, jobs (rq's bookkeeping and each job's own run).",
        ),
        Family(
            "newsdesk_reconcile_repairs_total",
            "counter",
            "Work re-created by the reconciliation sweep, by kind.",
        ),
        Family("newsdesk_webhook_deliveries_total", "counter", "Webhook POSTs by outcome."),
        Family(
            "newsdesk_api_cache_total",
            "counter",
            "API response cache lookups by outcome: hit, miss, bypass (not_modified: the 304s).",
        ),
        Family(
            "newsdesk_webhook_latency_seconds",
            "histogram",
            "Time from sending a webhook POST to its answer.",
        ),
        Family("newsdesk_feeds", "gauge", "Sources by state."),
        Family("newsdesk_entities", "gauge", "Entities stored."),
        Family("newsdesk_articles", "gauge", "Articles stored."),
        Family("newsdesk_deliveries", "gauge", "Webhook deliveries by status."),
        Family("newsdesk_queue_depth", "gauge", "Jobs waiting in each rq queue."),
        Family(
            "newsdesk_queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest job waiting in each rq queue (0 when empty).",
        ),
        Family("newsdesk_queue_failed", "gauge", "Jobs in each rq queue's failed registry."),
    )
}


def sample(name: str, labels: Mapping[str, Any] | None = None) -> str:
    """The sample's text form: ``name{a="1",b="x"}`` (labels sorted, values escaped)."""
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Recorder:
    """Buffers this process's counter increments; :meth:`flush` adds them to Redis.

    Args:
        client: a synchronous ``redis.Redis`` (None: record nothing, e.g. in unit tests).
    """

    def __init__(self, client: Any | None) -> None:
        self._client = client
        self._pending: defaultdict[str, float] = defaultdict(float)
        self._touched: set[str] = set()
        self._held = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Flushes inside the block wait for its end: one round trip for a batch of jobs."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self.flush()

    def add(self, name: str, value: float = 1.0, **labels: Any) -> None:
        if value:
            self._pending[sample(name, labels)] += value

    def touch(self, key: str) -> None:
        """INCR the plain Redis key ``key`` in the next flush, once however often it is
        touched before it (the data version, :mod:`services.dataversion`)."""
        self._touched.add(key)

    def observe(
        self, name: str, seconds: float, buckets: Sequence[float] = DURATION_BUCKETS, **labels: Any
    ) -> None:
        """One histogram observation (cumulative buckets, as Prometheus expects)."""
        fields = _histogram_fields(name, tuple(sorted(labels.items())), tuple(buckets))
        *bounded, inf, total, count = fields
        for bound, field in zip(buckets, bounded, strict=True):
            # Every bucket is written (HINCRBY 0 creates it at zero).
            self._pending[field] += 1 if seconds <= bound else 0
        self._pending[inf] += 1
        self._pending[total] += seconds
        self._pending[count] += 1

    def flush(self) -> None:
        """Add the buffered increments to Redis in one round trip; a failure drops them
        (metrics must never stop the work they describe) with a log line. Inside
        :meth:`held` this waits for the end of the block."""
        if self._held:
            return
        nothing = not self._pending and not self._touched
        if nothing or self._client is None:  # (nothing recorded, or nowhere to)
            self._pending.clear()
            self._touched.clear()
            return
        pending, self._pending = self._pending, defaultdict(float)
        touched, self._touched = self._touched, set()
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in sorted(touched):
                pipe.incr(key)
            for field, value in pending.items():
                # A histogram's sum is a float in Redis once any increment was fractional, and
                # HINCRBY refuses a float field: sums always go through HINCRBYFLOAT.
                if float(value).is_integer() and not _is_sum(field):
                    pipe.hincrby(KEY, field, int(value))
                else:
                    pipe.hincrbyfloat(KEY, field, value)
            pipe.execute()
        except Exception as exc:  # Redis down: the next flush tries again with new counts
            # A lost count is tolerable; a lost touch would leave readers on stale data until
            # their entries expire, so it is kept for the next flush.
            self._touched |= touched
            log.warning("metrics.flush_failed error=%s", type(exc).__name__)


@lru_cache(maxsize=256)
def _histogram_fields(
    name: str, labels: tuple[tuple[str, Any], ...], buckets: tuple[float, ...]
) -> tuple[str, ...]:
    """A histogram's sample names: one bucket per bound, then +Inf, sum and count (the same
    few label sets come back for every observation, so they are built once)."""
    given = dict(labels)
    bounded = [sample(f"{name}_bucket", {**given, "le": _le(b)}) for b in buckets]
    return (
        *bounded,
        sample(f"{name}_bucket", {**given, "le": "+Inf"}),
        sample(f"{name}_sum", given),
        sample(f"{name}_count", given),
    )


def _is_sum(field: str) -> bool:
    return field.split("{", 1)[0].endswith("_sum")


def _le(bound: float) -> str:
    return f"{bound:g}"


def render(counters: Mapping[str, float], gauges: Iterable[tuple[str, float]]) -> str:
    """Prometheus text exposition (version 0.0.4) of stored counters and scrape-time gauges."""
    by_family: defaultdict[str, list[tuple[str, float]]] = defaultdict(list)
    for field, value in [*counters.items(), *gauges]:
        by_family[_family_of(field)].append((field, value))
    lines: list[str] = []
    for name in sorted(by_family):
        family = FAMILIES.get(name)
        if family is not None:
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.type}")
        for field, value in sorted(by_family[name], key=_order):
            lines.append(f"{field} {_number(value)}")
    return "\n".join(lines) + "\n"


def _family_of(field: str) -> str:
    name = field.split("{", 1)[0]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and FAMILIES.get(base, Family("", "", "")).type == "histogram":
            return base
    return name


def _order(item: tuple[str, float]) -> tuple[str, float]:
    """Samples grouped by label set, histogram buckets in increasing ``le``."""
    field = item[0]
    if 'le="' not in field:
        return field, 0.0
    le = field.split('le="', 1)[1].split('"', 1)[0]
    rest = field.replace(f'le="{le}"', "")
    return rest, math.inf if le == "+Inf" else float(le)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse(text: str) -> dict[str, float]:
    """Samples of a text exposition (comments skipped): for tests and tools."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            field, value = line.rsplit(" ", 1)
            found[field] = float(value)
    return found
