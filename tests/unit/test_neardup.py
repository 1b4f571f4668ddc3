"""Near-duplicate detection (pure): shingles, MinHash, bands and the two thresholds."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import neardup as nd
from tests.syndication import (
    SEED_PARAGRAPH_10_EDITED,
    Text,
    capture,
    follow_up,
    item,
    seed,
    sentence_rewritten,
    wire_copy,
)

LA1 = "latimes__20200421T200942Z.xml"
LA2 = "latimes__20200512T020122Z.xml"
WORDS = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1, max_size=200
)


def relation(a: str, b: str) -> nd.Relation:
    return nd.similarity(nd.shingles(a), nd.shingles(b)).relation


def test_short_texts_have_no_sketch() -> None:
    assert nd.sketch(" ".join(["word"] * (nd.MIN_WORDS - 1))) is None
    assert nd.sketch(" ".join(f"w{i}" for i in range(nd.MIN_WORDS))) is not None
    # Punctuation is not a word: "U.S." is two words after normalisation, "—" none.
    assert nd.words("U.S. — aid") == ["u", "s", "aid"]


def test_signature_and_bands_are_pinned() -> None:
    """Stored band values depend on these constants; a change needs a re-index migration."""
    sketch = nd.sketch(seed().body)
    assert sketch is not None
    assert len(sketch.bands) == nd.BANDS == 64 and nd.ROWS == 2
    assert sketch == nd.sketch(seed().body)
    sig = nd.signature(sketch.shingles)
    assert sig[:2] == (4682956, 2140)
    assert sketch.bands[:2] == (7318731974168883853, 8756154196040769852)
    assert all(0 <= v < 4_294_967_311 for v in sig)
    assert sig[:3] == nd.signature(sorted(sketch.shingles, reverse=True))[:3]
    assert nd.estimate(sig, sig) == 1.0


def _digest(values: Iterable[int]) -> str:
    return hashlib.sha256(",".join(map(str, values)).encode()).hexdigest()[:16]


def _long_text() -> str:
    """9,000 words: more shingles than one slice of the signature computation."""
    rng = random.Random(7)
    return " ".join(f"w{rng.randrange(100_000)}" for _ in range(9000))


@pytest.mark.parametrize(
    ("text", "digests"),
    [
        (seed().body, ("77217ab1b1f17592", "ce90b3edd5598167", "0c1bb6fd2b08c99a")),
        (_long_text(), ("305a3a4bf501fd85", "5ce225b63eae12db", "0cb50a1a88ff9887")),
    ],
    ids=["seed", "long"],
)
def test_every_shingle_signature_value_and_band_is_pinned(
    text: str, digests: tuple[str, str, str]
) -> None:
    """All of a sketch, not only its first values: a faster implementation must give the
    stored values exactly."""
    sketch = nd.sketch(text)
    assert sketch is not None
    shingles = _digest(sorted(sketch.shingles))
    assert (shingles, _digest(nd.signature(sketch.shingles)), _digest(sketch.bands)) == digests


def _bands_band_by_band(sig: tuple[int, ...]) -> tuple[int, ...]:
    """The band rule written out: BLAKE2b-64 of the band index (2 bytes) and its rows'
    values (5 bytes each), big-endian, read as a signed integer."""
    out = []
    for band in range(nd.BANDS):
        rows = sig[band * nd.ROWS : (band + 1) * nd.ROWS]
        data = band.to_bytes(2, "big") + b"".join(v.to_bytes(5, "big") for v in rows)
        out.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), signed=True))
    return tuple(out)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(st.integers(0, 4_294_967_310), st.sampled_from([0, 255, 2**32, 2**40 - 1])),
        min_size=nd.PERMUTATIONS,
        max_size=nd.PERMUTATIONS,
    )
)
def test_bands_are_each_bands_hash_as_written_out(sig: list[int]) -> None:
    assert nd.bands(tuple(sig)) == _bands_band_by_band(tuple(sig))


@pytest.mark.parametrize("sig", [(0,) * 127, (2**40,) * 128, (1,) * 129], ids=str)
def test_bands_refuse_what_is_no_signature(sig: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="signature"):
        nd.bands(sig)


def test_the_sketch_of_an_extracted_article_is_the_sketch_of_its_text() -> None:
    """Extraction hands the sketch the body it normalised for the hash: the same sketch as
    from the text, for a page and for a plain-text file."""
    from services.core.extract import ItemPayload, extract
    from services.core.fingerprint import normalise_text
    from tests.pages import SEED, article_page, seed_article

    file_item = ItemPayload(
        feed_id=1,
        item_key="f",
        content_hash="h",
        kind="file",
        content=SEED.read_text(encoding="utf-8"),
    )
    page_item = ItemPayload(feed_id=1, item_key="p", content_hash="h", kind="feed",
                            title="Seed", url="https://example.test/a",
                            page_url="https://example.test/a",
                            page_html=article_page(seed_article()))  # fmt: skip
    for found in (extract(file_item), extract(page_item)):
        assert found.normalised_text == normalise_text(found.text)
        given = nd.sketch(found.text, found.normalised_text)
        assert given is not None and given == nd.sketch(found.text)


def test_a_text_shorter_than_a_shingle_is_one_shingle() -> None:
    assert len(nd.shingles("a b c")) == 1
    assert _digest(sorted(nd.shingles("a b c"))) == "2a6e9198d74bab44"


@pytest.mark.parametrize(
    "text", [seed().body, _long_text(), "a b c"], ids=["seed", "long", "short"]
)
def test_a_shingle_id_is_the_low_half_of_the_words_blake2b_64(text: str) -> None:
    """The rule written out. The MinHash always took this half of the 64-bit digest, so the
    signatures and bands stored before ids were 32-bit (pinned above) are unchanged."""
    tokens = nd.words(text)
    grams = [" ".join(tokens[i : i + nd.SHINGLE_WORDS]) for i in range(max(1, len(tokens) - 3))]
    digests = [hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams]
    assert nd.shingles(text) == frozenset(int.from_bytes(d[4:]) for d in digests)


@settings(max_examples=200)
@given(st.frozensets(st.integers(0, 2**32 - 1), max_size=300))
def test_packed_shingles_unpack_to_the_same_set(ids: frozenset[int]) -> None:
    data = nd.pack(ids)
    assert len(data) == 4 * len(ids)
    assert nd.unpack(data) == ids
    assert data == nd.pack(frozenset(sorted(ids, reverse=True)))  # the same bytes for one set


def test_packed_shingles_of_a_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="4-byte"):
        nd.unpack(b"\x01\x02\x03")


S = seed()
CASES = [
    ("credit and headline", wire_copy(S, key="a", headline="Blinken to the Mideast"), "DUPLICATE"),
    (
        "credit, headline, one paragraph rewritten",
        wire_copy(S, key="b", headline="x", changed={10: SEED_PARAGRAPH_10_EDITED}),
        "DUPLICATE",
    ),
    ("tail cut to 60%", wire_copy(S, key="c", headline="x", keep=7), "DUPLICATE"),
    (
        "follow-up keeping the top seven paragraphs",
        follow_up(
            S,
            key="d",
            headline="x",
            keep=7,
            new=[t.body for t in capture(LA1)[:12] if len(t.body.split()) > 20],
        ),
        "STORY",
    ),
    (
        "half the paragraphs shared",
        follow_up(S, key="e", headline="x", keep=6, new=[item(LA2, "concerts-reopening").body]),
        "STORY",
    ),
    ("another real article", item(LA2, "concerts-reopening"), "NONE"),
]


@pytest.mark.parametrize(("case", "variant", "expected"), CASES, ids=[c[0] for c in CASES])
def test_relation_of_seed_variants(case: str, variant: Text, expected: str) -> None:
    assert relation(S.body, variant.body).name == expected


def test_wire_copy_of_a_long_la_times_item() -> None:
    original = item(LA2, "concerts-reopening")
    copy = sentence_rewritten(original, key="copy", dateline="LOS ANGELES")
    assert relation(original.body, copy.body) is nd.Relation.DUPLICATE


def test_no_two_distinct_real_items_of_40_words_are_similar() -> None:
    long = [t for name in (LA1, LA2) for t in capture(name) if nd.sketch(t.body) is not None]
    distinct = {nd.shingles(t.body): t.key for t in long}
    assert len(distinct) >= 5
    ids = list(distinct)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert nd.similarity(a, b).jaccard < 0.05


def test_best_match_prefers_duplicates_then_jaccard_then_lowest_id() -> None:
    new = frozenset(range(100))
    story = (7, frozenset(range(50, 200)))  # J = 50/200
    dup_far = (9, frozenset(range(25, 100)))  # contained, J = 0.75
    dup_near = (12, frozenset(range(5, 100)))  # J = 0.95
    twin = (3, frozenset(range(5, 100)))
    stored = [story, dup_far, dup_near, twin, (1, frozenset(range(500, 600)))]
    for seed_ in range(5):
        random.Random(seed_).shuffle(stored)
        match = nd.best_match(new, stored)
        assert match is not None
        assert (match.article_id, match.relation) == (3, nd.Relation.DUPLICATE)
    only_story = nd.best_match(new, [story])
    assert only_story is not None and only_story.relation is nd.Relation.STORY
    assert nd.best_match(new, [(1, frozenset(range(500, 600)))]) is None


@settings(max_examples=60, deadline=None)
@given(WORDS, WORDS)
def test_similarity_and_estimate_are_symmetric(a: list[str], b: list[str]) -> None:
    x, y = nd.shingles(" ".join(a)), nd.shingles(" ".join(b))
    assert nd.similarity(x, y) == nd.similarity(y, x)
    sx, sy = nd.signature(x), nd.signature(y)
    assert nd.estimate(sx, sy) == nd.estimate(sy, sx)
    assert 0.0 <= nd.similarity(x, y).jaccard <= 1.0


@settings(max_examples=60, deadline=None)
@given(WORDS)
def test_identical_texts_are_similar_one(a: list[str]) -> None:
    text = " ".join(a)
    x = nd.shingles(text)
    assert nd.similarity(x, nd.shingles(text.upper() + " !")).jaccard == 1.0
    assert nd.estimate(nd.signature(x), nd.signature(x)) == 1.0


@pytest.mark.parametrize("variant", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_estimate_tracks_exact_jaccard(variant: Text) -> None:
    a, b = nd.shingles(S.body), nd.shingles(variant.body)
    exact = nd.similarity(a, b).jaccard
    assert abs(nd.estimate(nd.signature(a), nd.signature(b)) - exact) < 0.15


def test_story_similar_texts_share_a_band() -> None:
    """Candidate lookup must find what verification would accept (1-(1-J^2)^64 at J>=0.25)."""
    for _case, variant, expected in CASES:
        if expected == "NONE":
            continue
        a, b = nd.sketch(S.body), nd.sketch(variant.body)
        assert a is not None and b is not None
        assert set(enumerate(a.bands)) & set(enumerate(b.bands))
