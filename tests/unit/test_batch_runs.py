"""A worker batch is cut into runs before each item that meets an earlier item of its run."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.db import bands
from workers.batch import _runs

BANDS = 8  # the cut only compares band positions; fewer than the real 64 make clashes likely


def item(
    name: str, band_values: tuple[int, ...] | None, *, digest: str = "", urls: tuple[str, ...] = ()
) -> Any:
    extracted = SimpleNamespace(content_hash=digest or f"hash-{name}", urls=urls)
    sketch = None if band_values is None else SimpleNamespace(bands=band_values)
    return (name, SimpleNamespace(extracted=extracted, sketch=sketch))


def names(runs: list[list[Any]]) -> list[list[str]]:
    return [[ref for ref, _ in run] for run in runs]


def test_two_shared_bands_with_an_earlier_item_of_the_run_start_a_new_run() -> None:
    runs = _runs([
        item("a", (1, 2, 3, 4, 5, 6, 7, 8)),
        item("b", (1, 0, 0, 0, 0, 0, 0, 0)),   # one band shared with a: same run
        item("c", (9, 2, 3, 9, 9, 9, 9, 9)),   # two with a: new run
        item("d", (1, 2, 0, 0, 0, 0, 0, 0)),   # one with c (a is in the run before): same run
        item("e", (9, 9, 0, 0, 0, 0, 0, 0)),   # six with d: new run
    ])  # fmt: skip
    assert names(runs) == [["a", "b"], ["c", "d"], ["e"]]


def test_equal_values_in_different_band_positions_are_not_shared() -> None:
    runs = _runs([item("a", (1, 2, 3, 4, 5, 6, 7, 8)), item("b", (2, 1, 4, 3, 6, 5, 8, 7))])
    assert names(runs) == [["a", "b"]]


def test_a_shared_url_or_text_starts_a_new_run() -> None:
    runs = _runs([
        item("a", None, urls=("https://x.test/1",)),
        item("b", None, urls=("https://x.test/2",)),
        item("c", None, urls=("https://x.test/1",)),
        item("d", (1,) * BANDS, digest="hash-c"),
    ])  # fmt: skip
    assert names(runs) == [["a", "b"], ["c"], ["d"]]


def cut_pairwise(items: list[Any]) -> list[list[str]]:
    """The rule stated directly: compare each item with every earlier item of its run."""
    runs: list[list[Any]] = []
    for ref, ready in items:
        meets = False
        for _, earlier in runs[-1] if runs else []:
            same_text = ready.extracted.content_hash == earlier.extracted.content_hash
            same_url = bool(set(ready.extracted.urls) & set(earlier.extracted.urls))
            shared = 0
            if ready.sketch is not None and earlier.sketch is not None:
                pairs = zip(ready.sketch.bands, earlier.sketch.bands, strict=True)
                shared = sum(a == b for a, b in pairs)
            meets = meets or same_text or same_url or shared >= bands.MIN_BAND_HITS
        if meets or not runs:
            runs.append([])
        runs[-1].append((ref, ready))
    return names(runs)


small = st.integers(0, 3)
items = st.lists(
    st.tuples(
        st.one_of(st.none(), st.tuples(*[small] * BANDS)),
        st.sampled_from(["", "h1", "h2"]),
        st.lists(st.sampled_from(["u1", "u2", "u3"]), max_size=2),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(items)
def test_runs_are_cut_where_pairwise_comparison_cuts_them(drawn: list[Any]) -> None:
    batch = [
        item(str(i), values, digest=digest, urls=tuple(urls))
        for i, (values, digest, urls) in enumerate(drawn)
    ]
    assert names(_runs(batch)) == cut_pairwise(batch)
