"""A worker batch is cut into runs before each item whose decision an earlier item of its run
could change, had that one been stored first."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import neardup
from services.db import bands
from workers.batch import _runs

BANDS = 8  # the cut only compares band positions; fewer than the real 64 make clashes likely
STORY = frozenset(range(10))  # shingles of texts of one story (Jaccard 1.0 with each other)
OTHER = frozenset(range(100, 110))  # an unrelated text's


def item(
    name: str,
    band_values: tuple[int, ...] | None,
    *,
    digest: str = "",
    urls: tuple[str, ...] = (),
    shingles: frozenset[int] = STORY,
) -> Any:
    extracted = SimpleNamespace(content_hash=digest or f"hash-{name}", urls=urls)
    sketch = None if band_values is None else SimpleNamespace(bands=band_values, shingles=shingles)
    return (name, SimpleNamespace(extracted=extracted, sketch=sketch))


def cut(items: list[Any], candidates: Sequence[int] | None = None) -> list[list[str]]:
    runs = _runs(items, candidates if candidates is not None else [0] * len(items))
    return [[ref for ref, _ in run] for run in runs]


def test_two_shared_bands_with_a_related_earlier_item_of_the_run_start_a_new_run() -> None:
    runs = cut([
        item("a", (1, 2, 3, 4, 5, 6, 7, 8)),
        item("b", (1, 0, 0, 0, 0, 0, 0, 0)),   # one band shared with a: same run
        item("c", (9, 2, 3, 9, 9, 9, 9, 9)),   # two with a: new run
        item("d", (1, 2, 0, 0, 0, 0, 0, 0)),   # one with c (a is in the run before): same run
        item("e", (9, 9, 0, 0, 0, 0, 0, 0)),   # six with d: new run
    ])  # fmt: skip
    assert runs == [["a", "b"], ["c", "d"], ["e"]]


def test_shared_bands_with_an_unrelated_text_do_not_cut() -> None:
    """A lookup would find the earlier item, verify it and pass over it."""
    runs = cut([
        item("a", (1, 2, 3, 4, 5, 6, 7, 8)),
        item("b", (1, 2, 3, 4, 0, 0, 0, 0), shingles=OTHER),
        item("c", (1, 2, 3, 0, 0, 0, 0, 0), shingles=STORY | {50, 51}),  # related to a
    ])  # fmt: skip
    assert runs == [["a", "b"], ["c"]]
    # Sharing a quarter of their shingles (Jaccard 0.25) makes two texts one story.
    quarter = frozenset(range(4)) | frozenset(range(200, 212))
    assert neardup.similarity(STORY, quarter).jaccard < neardup.STORY
    assert cut([item("a", (1,) * BANDS), item("b", (1,) * BANDS, shingles=quarter)]) == [["a", "b"]]
    story = frozenset(range(5)) | frozenset(range(200, 210))
    assert neardup.similarity(STORY, story).jaccard >= neardup.STORY
    assert cut([item("a", (1,) * BANDS), item("b", (1,) * BANDS, shingles=story)]) == [
        ["a"],
        ["b"],
    ]


def test_an_item_with_more_candidates_than_a_lookup_verifies_cuts_at_any_shared_bands() -> None:
    """An earlier item could push a stored candidate out of the ones verified."""
    full = bands.MAX_CANDIDATES
    a, b = item("a", (1,) * BANDS), item("b", (1,) * BANDS, shingles=OTHER)
    assert cut([a, b], [0, full - 1]) == [["a", "b"]]
    assert cut([a, b], [0, full]) == [["a"], ["b"]]
    # Candidates from earlier runs count too, though only a related one of its run cuts.
    c = item("c", (1,) * BANDS)  # related to a: new run
    d = item("d", (1,) * BANDS, shingles=OTHER)  # unrelated to c, shares bands with a, b, c
    assert cut([a, b, c, d], [0, 0, 0, full - 3]) == [["a", "b"], ["c", "d"]]
    assert cut([a, b, c, d], [0, 0, 0, full - 2]) == [["a", "b"], ["c"], ["d"]]


def test_equal_values_in_different_band_positions_are_not_shared() -> None:
    runs = cut([item("a", (1, 2, 3, 4, 5, 6, 7, 8)), item("b", (2, 1, 4, 3, 6, 5, 8, 7))])
    assert runs == [["a", "b"]]


def test_a_shared_url_or_text_starts_a_new_run() -> None:
    runs = cut([
        item("a", None, urls=("https://x.test/1",)),
        item("b", None, urls=("https://x.test/2",)),
        item("c", None, urls=("https://x.test/1",)),
        item("d", (1,) * BANDS, digest="hash-c", shingles=OTHER),
    ])  # fmt: skip
    assert runs == [["a", "b"], ["c"], ["d"]]


def cut_pairwise(items: list[Any], candidates: Sequence[int]) -> list[list[str]]:
    """The rule stated directly: compare each item with every earlier item of the batch."""

    def shared(x: Any, y: Any) -> int:
        if x.sketch is None or y.sketch is None:
            return 0
        return sum(a == b for a, b in zip(x.sketch.bands, y.sketch.bands, strict=True))

    runs: list[list[Any]] = []
    before: list[Any] = []
    for (ref, ready), stored in zip(items, candidates, strict=True):
        close = [e for e in before if shared(ready, e) >= bands.MIN_BAND_HITS]
        meets = ready.sketch is not None and stored + len(close) > bands.MAX_CANDIDATES
        for _, earlier in runs[-1] if runs else []:
            same_text = ready.extracted.content_hash == earlier.extracted.content_hash
            same_url = bool(set(ready.extracted.urls) & set(earlier.extracted.urls))
            related = shared(ready, earlier) >= bands.MIN_BAND_HITS and (
                neardup.similarity(ready.sketch.shingles, earlier.sketch.shingles).relation
                is not neardup.Relation.NONE
            )
            meets = meets or same_text or same_url or related
        if meets or not runs:
            runs.append([])
        runs[-1].append((ref, ready))
        before.append(ready)
    return [[ref for ref, _ in run] for run in runs]


small = st.integers(0, 3)
items = st.lists(
    st.tuples(
        st.one_of(st.none(), st.tuples(*[small] * BANDS)),
        st.sampled_from(["", "h1", "h2"]),
        st.lists(st.sampled_from(["u1", "u2", "u3"]), max_size=2),
        st.frozensets(st.integers(0, 7), max_size=6),  # shingles: all relations occur
        st.sampled_from([0, 1, bands.MAX_CANDIDATES - 2, bands.MAX_CANDIDATES]),
    ),
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@given(items)
def test_runs_are_cut_where_pairwise_comparison_cuts_them(drawn: list[Any]) -> None:
    batch = [
        item(str(i), values, digest=digest, urls=tuple(urls), shingles=shingles)
        for i, (values, digest, urls, shingles, _) in enumerate(drawn)
    ]
    candidates = [stored for *_, stored in drawn]
    assert cut(batch, candidates) == cut_pairwise(batch, candidates)
