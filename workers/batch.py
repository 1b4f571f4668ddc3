"""A batch of extraction jobs taken together by one worker process.

:func:`prepare` extracts the batch's new items and looks up each outside any transaction,
runs NER on those that are not copies in one ``nlp.pipe`` call (cheaper per text than one
call per text), then decides and writes them in one transaction under the dedup lock, in job
order, each exactly as its own job would: the sighting is read again inside, so an earlier
item of the batch counts. Each job then returns its item's outcome (workers.pipeline.process).
Under the lock the items are decided together, then go in runs, cut before an item whose
decision an earlier one of its run could change (a shared URL or text, or enough shared
near-duplicate bands with a related text or among too many candidates): a run is written
together (one statement for all its articles, one for their sightings, and so on), and an
item whose decision none of the earlier ones could change is decided the same for their
absence (see :func:`_runs`). The decisions taken before the lock stand when storage
provably did not change since (SQLite: the same connection, no write by it or by any other
since).

The transaction commits before rq records any of the jobs as finished: a crash in between
leaves them started, and their retry finds the sightings stored. An item the batch cannot
take (an update of an item stored earlier in the batch, a copy whose original changed under
it) and every item after it are left to their own jobs, so decisions are taken in the same
order as one by one. A failed transaction leaves each job its prepared item.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.core import neardup
from services.core.entities import canonicalise
from services.core.errors import ExtractError
from services.core.extract import Extracted, ItemPayload, extract
from services.db import articles, bands, sightings, stories
from services.db.articles import ItemRef
from services.db.engine import StorageMark, reading, storage_mark, transaction
from services.metrics import Recorder
from workers.context import WorkerContext
from workers.pipeline import (
    Decision,
    Outcome,
    Ready,
    decide_many,
    item_ref,
    ready_key,
    write_new,
)

log = logging.getLogger("newsdesk.worker")

# CPU seconds of worker batches by phase (a Prometheus counter, see services.metrics).
BATCH_CPU = "newsdesk_worker_batch_cpu_seconds_total"


class Phases:
    """Times a batch's phases in CPU seconds (``time.process_time``) and adds each to
    :data:`BATCH_CPU` with its ``phase`` label, in the batch's metrics; ``total`` is their sum."""

    def __init__(self, metrics: Recorder) -> None:
        self.metrics = metrics
        self.total = 0.0

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            spent = time.process_time() - started
            self.total += spent
            self.metrics.add(BATCH_CPU, spent, phase=phase)


def prepare(ctx: WorkerContext, raws: Sequence[Any], phases: Phases | None = None) -> int:
    """Extract the new items among ``raws``, run NER on them in one batch and store them in one
    transaction; each item's job (:func:`process`) then returns the stored outcome, or does
    the rest itself from the prepared item. Returns how many items were made ready.

    Items that are not new (a known version, an update of a stored article) and items that
    fail to extract are left to their job, which handles and records them as usual.
    """
    phase = phases or Phases(ctx.metrics)
    pending, looked_up = _new_items(ctx, raws, phase)
    texts = [e.analysed_text for _, _, e, _, copy in pending if not copy]
    with phase("ner"):
        mentions = iter(_recognise_many(ctx, texts))
    ready: list[tuple[ItemRef, Ready]] = []
    with phase("entities"):
        for item, raw, extracted, sketch, copy in pending:
            found = None if copy else canonicalise(extracted.analysed_text, next(mentions))
            ref = item_ref(item, raw)
            ready.append((ref, Ready(extracted, sketch, found)))
            ctx.prepared[ready_key(ref)] = ready[-1][1]
    try:
        with phase("store"):
            ctx.prepared.update(_store_batch(ctx, ready, looked_up))
    except SQLAlchemyError:  # each job then stores its own prepared item, and reports errors
        log.warning("worker.batch_store_failed items=%d", len(ready), exc_info=True)
    return len(pending)


_Pending = tuple[ItemPayload, Any, Extracted, neardup.Sketch | None, bool]


@dataclass(frozen=True)
class _LookedUp:
    """The batch's items decided against storage before the lock, one decision per item,
    and the mark of the storage they were decided against (None: cannot tell, PostgreSQL)."""

    decisions: list[Decision]
    mark: StorageMark | None


def _new_items(
    ctx: WorkerContext, raws: Sequence[Any], phase: Phases
) -> tuple[list[_Pending], _LookedUp]:
    """The items of ``raws`` no stored sighting accounts for, extracted, each with whether it
    looks like a copy (of a stored article, or of an earlier item of the batch), and how
    each was decided against storage."""
    parsed: list[tuple[ItemPayload, Any]] = []
    for raw in raws:
        try:
            parsed.append((ItemPayload.from_dict(raw), raw))
        except (ValueError, KeyError, TypeError):
            continue  # the job itself reports it
    with phase("lookups"), reading(ctx.sessions) as session:
        seen = sightings.sighting_states(session, [(i.feed_id, i.item_key) for i, _ in parsed])
    new: list[tuple[ItemPayload, Any]] = []
    for item, raw in parsed:
        state = seen.get((item.feed_id, item.item_key))
        if state is None or not state.accounts_for(item.content_hash):
            new.append((item, raw))
    # Extraction runs outside any transaction: no snapshot is held while the CPU works.
    extracted: list[tuple[ItemPayload, Any, Extracted]] = []
    with phase("extract"):
        for item, raw in new:
            try:
                extracted.append((item, raw, extract(item)))
            except (ExtractError, ValueError, KeyError, TypeError):
                continue  # the job itself records it
    with phase("sketch"):
        sketches = [neardup.sketch(text.text, text.normalised_text) for _, _, text in extracted]
    texts = [t for _, _, t in extracted]
    with phase("lookups"), reading(ctx.sessions) as session:
        decisions = decide_many(session, list(zip(texts, sketches, strict=True)))
        mark = storage_mark(session)  # in the same transaction: what they were decided on
    pending: list[_Pending] = []
    batch = _BatchCopies()
    for (item, raw, text), sketch, decision in zip(extracted, sketches, decisions, strict=True):
        # A copy of an item earlier in the batch skips NER too: that item is stored first.
        copy = batch.is_copy(text, sketch) or decision.article_id is not None
        pending.append((item, raw, text, sketch, copy))
    return pending, _LookedUp(decisions, mark)


def _store_batch(
    ctx: WorkerContext, ready: list[tuple[ItemRef, Ready]], looked_up: _LookedUp | None = None
) -> dict[tuple[int, str, str], Outcome]:
    """Store the batch's ready items in one transaction, in order, as :func:`_store` would
    one by one; stops at the first item that needs more than that (left to its job).

    The items are decided together against storage, then cut into runs (:func:`_runs`)
    before each item whose decision an earlier one of its run could change: a run is
    written together, and the items of each later run are decided again once the runs
    before it are stored, as they would be one by one.

    ``looked_up``: the decisions taken before the lock on the same items, in order. Where
    storage is provably as they saw it (the same :func:`storage_mark` under the lock), they
    stand for the first decision: deciding again would read the same rows and decide the same.
    """
    done: dict[tuple[int, str, str], Outcome] = {}
    if not ready:
        return done
    with transaction(ctx.sessions) as session:
        stories.lock_dedup(session)
        now = ctx.clock()
        keys = [(ref.feed_id, ref.item_key) for ref, _ in ready]
        seen = sightings.sighting_states(session, keys)  # as of the lock, in one round trip
        taken: list[tuple[ItemRef, Ready]] = []
        for (ref, prepared), key in zip(ready, keys, strict=True):
            state = seen.get(key)
            if key in keys[: len(taken)] or (
                state is not None and state.accounts_for(ref.content_hash)
            ):
                break  # an earlier item of the batch, or another worker, took it: left to its job
            taken.append((ref, prepared))
        if not taken:
            return done
        if (
            looked_up is not None
            and looked_up.mark is not None
            and storage_mark(session) == looked_up.mark
        ):
            first = looked_up.decisions[: len(taken)]
        else:
            first = decide_many(session, [(r.extracted, r.sketch) for _, r in taken])
        for n, run in enumerate(_runs(taken, [d.candidates for d in first])):
            if n == 0:
                decisions = first[: len(run)]
            else:  # decided again, now that the runs before it are stored
                decisions = decide_many(session, [(r.extracted, r.sketch) for _, r in run])
            held = _Held()
            for (ref, prepared), decision in zip(run, decisions, strict=True):
                if decision.article_id is None and prepared.found is None:
                    done.update(held.write(session, now))
                    return done  # new after all, and without entities: left to its job
                held.add(ref, prepared, decision)
            done.update(held.write(session, now))
    return done


def _runs(
    items: list[tuple[ItemRef, Ready]], candidates: Sequence[int]
) -> list[list[tuple[ItemRef, Ready]]]:
    """``items`` cut, in order, before each item whose decision an earlier item of its run
    could change, had that one been stored first. ``candidates``: for each item, how many
    stored articles its decision found as near-duplicate candidates (before the cap).

    An earlier item E changes the decision of an item X only if

    - they share a URL or a text hash (X would be a copy of E), or
    - they share enough bands for E to be a candidate of X (``bands.MIN_BAND_HITS``), and
      either the two texts are related (at least STORY-similar: E could be X's match) or
      X's candidates, stored and earlier in the batch, are more than a lookup verifies
      (``bands.MAX_CANDIDATES``: E could push out a stored one).

    An unrelated item that shares a few bands is verified and passed over, as one by one.
    """
    runs: list[list[tuple[ItemRef, Ready]]] = []
    urls: set[str] = set()
    hashes: set[str] = set()
    # (band, value) -> the batch positions of the items whose sketch has it: an item's shared
    # bands with each earlier one are counted in one pass over its own bands.
    owners: dict[tuple[int, int], list[int]] = {}
    start = 0  # where the current run begins
    for position, ((ref, ready), stored) in enumerate(zip(items, candidates, strict=True)):
        extracted, sketch = ready.extracted, ready.sketch
        meets = extracted.content_hash in hashes or bool(urls.intersection(extracted.urls))
        if not meets and sketch is not None:
            shared = Counter(
                owner for band in enumerate(sketch.bands) for owner in owners.get(band, ())
            )
            close = [owner for owner, n in shared.items() if n >= bands.MIN_BAND_HITS]
            meets = stored + len(close) > bands.MAX_CANDIDATES or any(
                owner >= start and _related(sketch, items[owner][1].sketch) for owner in close
            )
        if meets or not runs:
            runs.append([])
            urls, hashes, start = set(), set(), position
        runs[-1].append((ref, ready))
        urls.update(extracted.urls)
        hashes.add(extracted.content_hash)
        if sketch is not None:
            for band in enumerate(sketch.bands):
                owners.setdefault(band, []).append(position)
    return runs


def _related(sketch: neardup.Sketch, other: neardup.Sketch | None) -> bool:
    """Whether a lookup of ``sketch`` would take ``other``'s text as a match (STORY or more)."""
    assert other is not None  # only items with a sketch have bands in the table
    return neardup.similarity(sketch.shingles, other.shingles).relation is not (
        neardup.Relation.NONE
    )


class _Held:
    """A run's writes, decided under the lock: copies to attach, new articles."""

    def __init__(self) -> None:
        self.copies: list[tuple[ItemRef, Ready, Decision]] = []
        self.new: list[tuple[ItemRef, Ready, Decision]] = []

    def add(self, ref: ItemRef, ready: Ready, decision: Decision) -> None:
        (self.new if decision.article_id is None else self.copies).append((ref, ready, decision))

    def write(self, session: Session, now: datetime) -> dict[tuple[int, str, str], Outcome]:
        """Make the held writes: the copies' sightings, then the new articles in order."""
        done: dict[tuple[int, str, str], Outcome] = {}
        if self.copies:
            articles.attach_many(
                session,
                [(d.article_id, ref, r.extracted.urls) for ref, r, d in self.copies
                 if d.article_id is not None],
                now=now,
            )  # fmt: skip
            for ref, _, d in self.copies:
                done[ready_key(ref)] = Outcome("duplicate", d.article_id, reason=d.reason)
        if self.new:
            outcomes = write_new(session, self.new, now)
            for (ref, _, _), outcome in zip(self.new, outcomes, strict=True):
                done[ready_key(ref)] = outcome
        return done


class _BatchCopies:
    """The items of one batch so far, to tell a copy of an earlier one (same URL, same
    text, near-duplicate) as the dedup lookup would once that item is stored."""

    def __init__(self) -> None:
        self.urls: set[str] = set()
        self.hashes: set[str] = set()
        self.shingles: list[tuple[int, frozenset[int]]] = []

    def is_copy(self, extracted: Extracted, sketch: neardup.Sketch | None) -> bool:
        copy = bool(self.urls.intersection(extracted.urls)) or extracted.content_hash in self.hashes
        if not copy and sketch is not None:
            match = neardup.best_match(sketch.shingles, self.shingles)
            copy = match is not None and match.relation is neardup.Relation.DUPLICATE
        self.urls.update(extracted.urls)
        self.hashes.add(extracted.content_hash)
        if sketch is not None:
            self.shingles.append((len(self.shingles), sketch.shingles))
        return copy


def _recognise_many(ctx: WorkerContext, texts: list[str]) -> list[list[Any]]:
    if not texts:
        return []
    many = getattr(ctx.recogniser, "recognise_many", None)
    if many is None:
        return [ctx.recogniser.recognise(t) for t in texts]
    return list(many(texts))
