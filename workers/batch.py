"""A batch of extraction jobs taken together by one worker process.

:func:`prepare` extracts the batch's new items and looks up each outside any transaction,
runs NER on those that are not copies in one ``nlp.pipe`` call (cheaper per text than one
call per text), then decides and writes them in one transaction under the dedup lock, in job
order, each exactly as its own job would: the sighting is read again inside, so an earlier
item of the batch counts. Each job then returns its item's outcome (workers.pipeline.process).

Under the lock, each item is decided against storage, and its writes are held and made
with those of the items after it (one statement for all their articles, one for their
sightings, and so on) until an item meets a held one: shares a URL or the text with it, or
enough near-duplicate bands to be compared. The held writes are made before that item is
decided, so it is decided as it would be one by one; an item that meets none of them
cannot be decided differently for their absence.

The transaction commits before rq records any of the jobs as finished: a crash in between
leaves them started, and their retry finds the sightings stored. An item the batch cannot
take (an update of an item stored earlier in the batch, a copy whose original changed under
it) and every item after it are left to their own jobs, so decisions are taken in the same
order as one by one. A failed transaction leaves each job its prepared item.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.core import neardup
from services.core.entities import canonicalise
from services.core.errors import ExtractError
from services.core.extract import Extracted, ItemPayload, extract
from services.db import articles, sightings, stories
from services.db.articles import ItemRef
from services.db.engine import reading, transaction
from workers.context import WorkerContext
from workers.pipeline import Decision, Outcome, Ready, decide, item_ref, ready_key, write_new

log = logging.getLogger("newsdesk.worker")


def prepare(ctx: WorkerContext, raws: Sequence[Any]) -> int:
    """Extract the new items among ``raws``, run NER on them in one batch and store them in one
    transaction; each item's job (:func:`process`) then returns the stored outcome, or does
    the rest itself from the prepared item. Returns how many items were made ready.

    Items that are not new (a known version, an update of a stored article) and items that
    fail to extract are left to their job, which handles and records them as usual.
    """
    pending = _new_items(ctx, raws)
    texts = [e.analysed_text for _, _, e, _, copy in pending if not copy]
    mentions = iter(_recognise_many(ctx, texts))
    ready: list[tuple[ItemRef, Ready]] = []
    for item, raw, extracted, sketch, copy in pending:
        found = None if copy else canonicalise(extracted.analysed_text, next(mentions))
        ref = item_ref(item, raw)
        ready.append((ref, Ready(extracted, sketch, found)))
        ctx.prepared[ready_key(ref)] = ready[-1][1]
    try:
        ctx.prepared.update(_store_batch(ctx, ready))
    except SQLAlchemyError:  # each job then stores its own prepared item, and reports errors
        log.warning("worker.batch_store_failed items=%d", len(ready), exc_info=True)
    return len(pending)


_Pending = tuple[ItemPayload, Any, Extracted, neardup.Sketch | None, bool]


def _new_items(ctx: WorkerContext, raws: Sequence[Any]) -> list[_Pending]:
    """The items of ``raws`` no stored sighting accounts for, extracted, each with whether it
    looks like a copy (of a stored article, or of an earlier item of the batch)."""
    parsed: list[tuple[ItemPayload, Any]] = []
    for raw in raws:
        try:
            parsed.append((ItemPayload.from_dict(raw), raw))
        except (ValueError, KeyError, TypeError):
            continue  # the job itself reports it
    with reading(ctx.sessions) as session:
        seen = sightings.sighting_states(session, [(i.feed_id, i.item_key) for i, _ in parsed])
    new: list[tuple[ItemPayload, Any]] = []
    for item, raw in parsed:
        state = seen.get((item.feed_id, item.item_key))
        if state is None or not state.accounts_for(item.content_hash):
            new.append((item, raw))
    # Extraction runs outside any transaction: no snapshot is held while the CPU works.
    extracted: list[tuple[ItemPayload, Any, Extracted]] = []
    for item, raw in new:
        try:
            extracted.append((item, raw, extract(item)))
        except (ExtractError, ValueError, KeyError, TypeError):
            continue  # the job itself records it
    pending: list[_Pending] = []
    batch = _BatchCopies()
    with reading(ctx.sessions) as session:
        for item, raw, text in extracted:
            sketch = neardup.sketch(text.text)
            copy = decide(session, text, sketch).article_id is not None
            # A copy of an item earlier in the batch skips NER too: that item is stored first.
            copy = batch.is_copy(text, sketch) or copy
            pending.append((item, raw, text, sketch, copy))
    return pending


def _store_batch(
    ctx: WorkerContext, ready: list[tuple[ItemRef, Ready]]
) -> dict[tuple[int, str, str], Outcome]:
    """Store the batch's ready items in one transaction, in order, as :func:`_store` would
    one by one; stops at the first item that needs more than that (left to its job).

    Each item is decided against storage as it stands under the lock, but its writes are
    held and made together with those of the items after it, until an item meets one of
    the held ones (a shared URL or text, or shared bands): the held writes are made first,
    so that item is decided as it would be one by one.
    """
    done: dict[tuple[int, str, str], Outcome] = {}
    if not ready:
        return done
    with transaction(ctx.sessions) as session:
        stories.lock_dedup(session)
        now = ctx.clock()
        keys = [(ref.feed_id, ref.item_key) for ref, _ in ready]
        seen = sightings.sighting_states(session, keys)  # as of the lock, in one round trip
        written: set[tuple[int, str]] = set()
        held = _Held()
        for (ref, prepared), key in zip(ready, keys, strict=True):
            state = seen.get(key)
            if key in written or (state is not None and state.accounts_for(ref.content_hash)):
                break  # an earlier item of the batch, or another worker, took it: left to its job
            if held.meets(prepared):
                done.update(held.write(session, now))
                held = _Held()
            decision = decide(session, prepared.extracted, prepared.sketch)
            if decision.article_id is None and prepared.found is None:
                break  # new after all, and without entities: left to its job
            held.add(ref, prepared, decision)
            written.add(key)
        done.update(held.write(session, now))
    return done


class _Held:
    """Writes decided under the lock and not made yet: copies to attach, new articles."""

    def __init__(self) -> None:
        self.copies: list[tuple[ItemRef, Ready, Decision]] = []
        self.new: list[tuple[ItemRef, Ready, Decision]] = []
        self.urls: set[str] = set()
        self.hashes: set[str] = set()
        self.bands: list[tuple[int, ...]] = []

    def add(self, ref: ItemRef, ready: Ready, decision: Decision) -> None:
        (self.new if decision.article_id is None else self.copies).append((ref, ready, decision))
        self.urls.update(ready.extracted.urls)
        self.hashes.add(ready.extracted.content_hash)
        if decision.article_id is None and ready.sketch is not None:
            self.bands.append(ready.sketch.bands)

    def meets(self, ready: Ready) -> bool:
        """Whether ``ready``'s decision could depend on the held writes: it shares a URL or
        the text with one of them, or enough bands with a held new article to be compared."""
        extracted = ready.extracted
        if extracted.content_hash in self.hashes or self.urls.intersection(extracted.urls):
            return True
        if ready.sketch is None:
            return False
        mine = ready.sketch.bands
        return any(
            sum(a == b for a, b in zip(mine, theirs, strict=True)) >= stories.MIN_BAND_HITS
            for theirs in self.bands
        )

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
