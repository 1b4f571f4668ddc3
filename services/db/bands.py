"""The near-duplicate index: each article's LSH bands, and the lookups that find the stored
articles a new text is a copy of or shares a story with."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from services.core import neardup
from services.db.models import Article, ArticleBand, ArticleShingles
from services.db.upsert import core

_ARTICLES = cast(Table, Article.__table__)
# Candidates verified per lookup, most shared bands first. Real clusters share most of their
# 64 bands; the cap bounds the work when boilerplate makes many articles share a few.
MAX_CANDIDATES = 50

_BANDS = cast(Table, ArticleBand.__table__)
_BANDS_DELETE = delete(_BANDS).where(_BANDS.c.article_id == bindparam("id"))
_SHINGLE_ROWS = cast(Table, ArticleShingles.__table__)
_SHINGLES_DELETE = delete(_SHINGLE_ROWS).where(_SHINGLE_ROWS.c.article_id == bindparam("id"))
_SHINGLES_INSERT = insert(_SHINGLE_ROWS).values(
    article_id=bindparam("id"), content_hash=bindparam("hash"), ids=bindparam("ids")
)


def index_article(
    session: Session, *, article_id: int, sketch: neardup.Sketch | None, content_hash: str
) -> None:
    """Make the article's stored bands and shingles those of ``sketch``, the sketch of its
    stored text, whose hash is ``content_hash`` (no sketch: a short text); for an article
    inserted in this transaction, :func:`index_new_articles`. The shingles are also
    remembered in this process, so the next lookups that meet the article as a candidate
    need not read them.
    """
    conn = core(session)
    conn.execute(_BANDS_DELETE, {"id": article_id})
    conn.execute(_SHINGLES_DELETE, {"id": article_id})
    if sketch is None:
        return
    _SHINGLES.put(article_id, content_hash, sketch.shingles)
    dialect = conn.dialect.name
    conn.execute(_BANDS_INSERT[dialect], {"id": article_id, "bands": _bands_param(dialect, sketch)})
    conn.execute(_SHINGLES_INSERT, _shingles_row(article_id, sketch, content_hash))


def index_new_articles(
    session: Session, items: Sequence[tuple[int, neardup.Sketch | None, str]]
) -> None:
    """:func:`index_article` for articles inserted in this transaction, given as (id,
    sketch of the stored text, its hash): one statement for all their bands, one for all
    their shingles."""
    rows, packed = [], []
    conn = core(session)
    dialect = conn.dialect.name
    for article_id, sketch, content_hash in items:
        if sketch is not None:
            _SHINGLES.put(article_id, content_hash, sketch.shingles)
            rows.append({"id": article_id, "bands": _bands_param(dialect, sketch)})
            packed.append(_shingles_row(article_id, sketch, content_hash))
    if rows:
        conn.execute(_BANDS_INSERT[dialect], rows)
        conn.execute(_SHINGLES_INSERT, packed)


def _shingles_row(article_id: int, sketch: neardup.Sketch, content_hash: str) -> dict[str, Any]:
    return {"id": article_id, "hash": content_hash, "ids": neardup.pack(sketch.shingles)}


class ShingleCache:
    """Shingle sets of recently compared articles, by id and text hash, least recently used
    out first.

    The same articles come up as candidates again and again (a developing story, a wire
    copy's siblings, and each job's second lookup under the lock); their stored shingles
    need not be read and unpacked every time (about 20 us for a 600-word text, against 1 us
    for a hit). A text whose hash changed is a miss.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, tuple[str, frozenset[int]]] = OrderedDict()

    def get(self, article_id: int, digest: str) -> frozenset[int] | None:
        hit = self._items.get(article_id)
        if hit is None or hit[0] != digest:
            return None
        self._items.move_to_end(article_id)
        return hit[1]

    def put(self, article_id: int, digest: str, shingles: frozenset[int]) -> frozenset[int]:
        self._items[article_id] = (digest, shingles)
        self._items.move_to_end(article_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return shingles


# About 25 KB per 500-word article: 500 entries stay near 12 MB per worker (2,000 showed as
# 50+ MB of growth over a 10-minute bench/pipeline.py run before the cache was full).
_SHINGLES = ShingleCache(500)

# A candidate must share at least this many of the 64 bands before its text is loaded and
# compared: one shared band is usually a common phrase. A pair at the STORY threshold
# (Jaccard 0.25) still shares two bands 91% of the time, at 0.3 98%, a duplicate always.
MIN_BAND_HITS = 2


# A sketch's bands travel as one parameter, a list expanded into (band, value) rows in SQL:
# a JSON array on SQLite (``json_each``: key = band), a bigint array on PostgreSQL
# (``unnest ... WITH ORDINALITY``). Binding 64 pairs one by one cost more than the lookup.
_BAND_ROWS = {
    "sqlite": "SELECT key AS band, value FROM json_each(:bands)",
    "postgresql": (
        "SELECT CAST(ord - 1 AS smallint) AS band, v AS value "
        "FROM unnest(CAST(:bands AS bigint[])) WITH ORDINALITY AS t(v, ord)"
    ),
}


_BANDS_INSERT = {
    dialect: text(
        "INSERT INTO article_bands (article_id, band, value) "
        f"SELECT :id, band, value FROM ({rows}) AS q"
    )
    for dialect, rows in _BAND_ROWS.items()
}


def _bands_param(dialect: str, sketch: neardup.Sketch) -> object:
    return json.dumps(sketch.bands) if dialect == "sqlite" else list(sketch.bands)


_DIGESTS = select(_ARTICLES.c.id, _ARTICLES.c.content_hash).where(
    _ARTICLES.c.id.in_(bindparam("ids", expanding=True))
)
_STORED_SHINGLES = select(
    _SHINGLE_ROWS.c.article_id, _SHINGLE_ROWS.c.content_hash, _SHINGLE_ROWS.c.ids
).where(_SHINGLE_ROWS.c.article_id.in_(bindparam("ids", expanding=True)))
_TEXTS = select(_ARTICLES.c.id, _ARTICLES.c.content_hash, _ARTICLES.c.text).where(
    _ARTICLES.c.id.in_(bindparam("ids", expanding=True))
)


def find_similar(
    session: Session,
    sketch: neardup.Sketch | None,
    *,
    exclude: int | None = None,
) -> neardup.Match | None:
    """The stored article closest to ``sketch`` if at least STORY-similar (see core.neardup),
    other than article ``exclude`` (reprocessing compares an article with the others)."""
    return find_similar_many(session, [sketch], exclude=exclude)[0][0]


# Many sketches' bands as rows (item, band, value), from one flat list of band values, BANDS
# per sketch: a JSON array on SQLite (one table-valued source, so the join probes the
# (band, value) index with both columns; three arrays joined on their keys made SQLite probe
# by band alone), a bigint array on PostgreSQL. Item and band are the position's quotient
# and remainder by BANDS.
_MANY_BAND_ROWS = {
    "sqlite": (
        f"SELECT key / {neardup.BANDS} AS item, key % {neardup.BANDS} AS band, value "
        "FROM json_each(:vals)"
    ),
    "postgresql": (
        f"SELECT CAST((ord - 1) / {neardup.BANDS} AS integer) AS item, "
        f"CAST((ord - 1) % {neardup.BANDS} AS smallint) AS band, v AS value "
        "FROM unnest(CAST(:vals AS bigint[])) WITH ORDINALITY AS t(v, ord)"
    ),
}
_MANY_BAND_HITS = {
    dialect: text(
        f"WITH q(item, band, value) AS ({rows}) "
        "SELECT q.item, ab.article_id, count(*) AS hits FROM q JOIN article_bands ab "
        "ON ab.band = q.band AND ab.value = q.value WHERE ab.article_id <> :exclude "
        "GROUP BY q.item, ab.article_id HAVING count(*) >= :min_hits"
    )
    for dialect, rows in _MANY_BAND_ROWS.items()
}


def band_values_param(dialect: str, sketches: Sequence[neardup.Sketch]) -> object:
    """The ``:vals`` parameter of the many-sketch lookup: every band value, in order."""
    values = [v for s in sketches for v in s.bands]
    return json.dumps(values) if dialect == "sqlite" else values


def find_similar_many(
    session: Session, sketches: Sequence[neardup.Sketch | None], *, exclude: int | None = None
) -> list[tuple[neardup.Match | None, int]]:
    """:func:`find_similar` for several sketches, each match with how many stored articles
    were candidates (at least ``MIN_BAND_HITS`` shared bands, before the ``MAX_CANDIDATES``
    cap), in three statements in all: the band hits of every sketch, the text hashes of every
    candidate, the stored shingles of those not cached (and the texts of any without).

    The (band, value) pairs are rows joined to ``article_bands``, so both SQLite and
    PostgreSQL probe its (band, value) index once per pair; a row-value ``IN`` list makes
    SQLite scan the whole table instead.
    """
    found: list[tuple[neardup.Match | None, int]] = [(None, 0)] * len(sketches)
    wanted = [(n, s) for n, s in enumerate(sketches) if s is not None]
    if not wanted:
        return found
    conn = core(session)
    dialect = conn.dialect.name
    params = {
        "vals": band_values_param(dialect, [s for _, s in wanted]),
        "min_hits": MIN_BAND_HITS,
        "exclude": -1 if exclude is None else exclude,
    }
    hits: dict[int, list[tuple[int, int]]] = {}
    for item, article_id, count in conn.execute(_MANY_BAND_HITS[dialect], params):
        hits.setdefault(wanted[int(item)][0], []).append((-int(count), int(article_id)))
    # Per sketch: most shared bands first, then the lowest id.
    ranked = {n: [a for _, a in sorted(h)[:MAX_CANDIDATES]] for n, h in hits.items()}
    shingles = _shingles_of(conn, sorted({a for ids in ranked.values() for a in ids}))
    for n, ids in ranked.items():
        sketch = sketches[n]
        assert sketch is not None
        stored = [(a, ids_) for a in ids if (ids_ := shingles.get(a)) is not None]
        found[n] = (neardup.best_match(sketch.shingles, stored), len(hits[n]))
    return found


def _shingles_of(conn: Any, ids: list[int]) -> dict[int, frozenset[int]]:
    """The shingles of the stored texts of articles ``ids``: remembered while the text is
    unchanged, else as stored with the bands, else (an article indexed before shingles were
    stored) from the text itself."""
    if not ids:
        return {}
    current = {article_id: digest for article_id, digest in conn.execute(_DIGESTS, {"ids": ids})}
    found = {i: _SHINGLES.get(i, digest) for i, digest in current.items()}
    missed = [i for i, ids_ in found.items() if ids_ is None]
    if missed:
        for i, digest, data in conn.execute(_STORED_SHINGLES, {"ids": missed}):
            if digest == current[i]:  # else of another text: read the current one below
                found[i] = _SHINGLES.put(i, digest, neardup.unpack(data))
        if stale := [i for i in missed if found[i] is None]:
            for i, digest, body in conn.execute(_TEXTS, {"ids": stale}):
                found[i] = _SHINGLES.put(i, digest, neardup.shingles(body))
    return {i: ids_ for i, ids_ in found.items() if ids_ is not None}
