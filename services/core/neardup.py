"""Near-duplicate detection: word shingles, MinHash with LSH bands, and the two thresholds.

Pipeline: normalised body text -> 4-word shingles (32-bit ids) -> a 128-value MinHash
signature -> 64 LSH bands of 2 rows, stored in SQL to find candidates -> verification by the
*exact* Jaccard similarity of the shingle sets (stored beside the bands, packed by
:func:`pack`; recomputed from the stored text for an article indexed before they were).

A shingle's id is the low half of an 8-byte BLAKE2b digest of its words, the half the
MinHash permutations always took. Two different shingles of one pair of texts share an id
with odds of about n^2 / 2^32 (under 1 in 10,000 for two 600-word texts), which can move the
Jaccard of that pair by 1/n.

Only the body is shingled: syndicated copies often carry a new headline, and headlines alone
are too short to tell stories apart. Measured on the real captures (tests/data/feeds and
shared/data/feeds: 50 captures, 3,468 items, 2,018 distinct GUIDs, see bench/quality.py):

- Texts shorter than ``MIN_WORDS`` (40 words) never near-merge. 98% of real feed texts are
  that short (BBC/NYT descriptions, median 17-25 words) and they are where the false pairs are:
  different stories with templated descriptions reach J=0.73 ("five things you need to know
  about the coronavirus outbreak this [wednesday] morning") and J=1.0 (two NYT briefings
  "Here's what you need to know" with different headlines). No pair of distinct real items
  of 40+ words reaches J=0.05 (none even shares an LSH band).
- ``DUPLICATE`` = 0.70 (Jaccard). Syndication variants of the seed article (548-word body,
  12 paragraphs): new headline + "(AP) —" credit + one paragraph replaced: J=0.83-0.84; a few
  sentences edited: 0.95; tagline appended: 0.98; two paragraphs replaced: 0.71. On 190-220
  word LA Times items, a credit + last sentence rewritten: J=0.90. Unrelated long items: 0.00.
- ``CONTAINED`` = 0.90 with ``MIN_LENGTH_RATIO`` = 0.5: a wire copy cut to length keeps all of
  its shingles but loses Jaccard (seed cut to its first 57%: J=0.57, containment 1.0), so
  a text whose shingles lie >= 90% inside the other, and which is at least half as long, is
  the same article too.
- ``STORY`` = 0.25 (Jaccard): a different article of the same story, typically the wire's
  write-through sharing about half of its text: half of the seed's paragraphs + other text
  gives J=0.28 (containment 0.51); a third shared: 0.15; five quote paragraphs: 0.20. The
  0.4-0.5 often quoted for "similar" needs ~60% shared text, which here is already a copy.

bench/quality.py (labelled pairs from the captures + constructed syndication variants):
precision 0.99 (1 false pair of 175); recall 100% for variants of 100+-word texts, 45% for
40-99-word texts (a rewritten last sentence is a third of a two-sentence deck), 0% for edited
short items; the exact-hash baseline finds none of these pairs.

Banding: 64 bands x 2 rows finds a pair as a candidate with probability 1-(1-J^2)^64:
0.98 at J=0.25, >0.999 at J=0.4, 0.47 at J=0.1 and <1% at J=0.01 (unrelated news).
Changing the shingle size, the permutation constants or the banding changes stored band
values: re-index (a migration) when you do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from services.core.fingerprint import normalise_text

SHINGLE_WORDS = 4
MIN_WORDS = 40
PERMUTATIONS = 128
BANDS = 64
ROWS = PERMUTATIONS // BANDS
DUPLICATE = 0.70
CONTAINED = 0.90
MIN_LENGTH_RATIO = 0.5
STORY = 0.25

_MASK32 = (1 << 32) - 1
# Smallest prime above 2**32: (a*x + b) mod p is a universal hash of 32-bit x. With a, b below
# 2**32 the product fits in uint64 without wrapping.
_PRIME = np.uint64(4_294_967_311)


def _coefficients(name: str) -> npt.NDArray[np.uint64]:
    """Seeded, platform- and version-independent (unlike numpy's RNG streams) coefficients."""

    def draw(i: int) -> int:
        seed = f"newsdesk.minhash.{name}.{i}".encode()
        return int.from_bytes(hashlib.blake2b(seed, digest_size=4).digest()) | 1

    return np.array([draw(i) for i in range(PERMUTATIONS)], dtype=np.uint64)


_SLICE = 2048
_A = _coefficients("a")
_B = _coefficients("b")


class Relation(Enum):
    """How a new text relates to a stored article's text."""

    NONE = 0
    STORY = 1
    DUPLICATE = 2


@dataclass(frozen=True)
class Similarity:
    jaccard: float
    containment: float  # shared / the smaller set
    length_ratio: float  # smaller set / larger set

    @property
    def relation(self) -> Relation:
        if self.jaccard >= DUPLICATE:
            return Relation.DUPLICATE
        if self.containment >= CONTAINED and self.length_ratio >= MIN_LENGTH_RATIO:
            return Relation.DUPLICATE
        if self.jaccard >= STORY:
            return Relation.STORY
        return Relation.NONE


@dataclass(frozen=True)
class Sketch:
    """What near-duplicate search needs of one text: its shingle ids and LSH band values."""

    shingles: frozenset[int]
    bands: tuple[int, ...]


@dataclass(frozen=True)
class Match:
    """The stored article a new text is closest to, and how close."""

    article_id: int
    relation: Relation
    similarity: Similarity


def words(text: str) -> list[str]:
    return normalise_text(text).split()


def shingles(text: str) -> frozenset[int]:
    """32-bit ids of the text's overlapping ``SHINGLE_WORDS``-word sequences."""
    return _shingles(words(text))


def _shingles(tokens: list[str]) -> frozenset[int]:
    count = max(1, len(tokens) - SHINGLE_WORDS + 1)
    blake2b = hashlib.blake2b
    grams = [" ".join(tokens[i : i + SHINGLE_WORDS]).encode("utf-8") for i in range(count)]
    digests = b"".join([blake2b(g, digest_size=8).digest() for g in grams])
    low = np.frombuffer(digests, dtype=">u8") & np.uint64(_MASK32)
    return frozenset(low.tolist())


def pack(ids: frozenset[int]) -> bytes:
    """A shingle set as stored: its ids in ascending order, 4 bytes each, little-endian."""
    return np.sort(np.fromiter(ids, dtype="<u4", count=len(ids))).tobytes()


def unpack(data: bytes) -> frozenset[int]:
    """The shingle set :func:`pack` stored as ``data``."""
    if len(data) % 4:
        raise ValueError("packed shingles are a whole number of 4-byte ids")
    return frozenset(np.frombuffer(data, dtype="<u4").tolist())


def signature(ids: Iterable[int]) -> tuple[int, ...]:
    """The MinHash signature: per permutation, the least hash over the shingles."""
    x = np.array(list(ids), dtype=np.uint64) & np.uint64(_MASK32)
    least = np.full(PERMUTATIONS, _PRIME, dtype=np.uint64)
    # In slices, so a very long text never needs a PERMUTATIONS x shingles matrix at once;
    # one scratch matrix per call, computed in place (fresh temporaries cost more than the
    # arithmetic: each is new memory the kernel has to map).
    scratch = np.empty((PERMUTATIONS, min(x.size, _SLICE)), dtype=np.uint64)
    for start in range(0, x.size, _SLICE):
        part = x[start : start + _SLICE]
        hashed = scratch[:, : part.size]
        np.multiply(_A[:, None], part, out=hashed)
        np.add(hashed, _B[:, None], out=hashed)
        np.remainder(hashed, _PRIME, out=hashed)
        np.minimum(least, hashed.min(axis=1), out=least)
    return tuple(least.tolist())


# A band's hashed bytes: its index (2 bytes), then each of its rows' values (5 bytes each),
# all big-endian.
_BAND_BYTES = 2 + 5 * ROWS
_BAND_INDEXES = np.arange(BANDS, dtype=">u2").view(np.uint8).reshape(BANDS, 2)


def bands(sig: Sequence[int]) -> tuple[int, ...]:
    """One signed 64-bit value per band (fits a SQL BIGINT), the band index mixed in.

    Each band is the first 8 bytes of BLAKE2b over its bytes (see ``_BAND_BYTES``), read as a
    signed big-endian integer. The values of ``sig`` are below 2**40 (a signature's are below
    ``_PRIME``); all bands' bytes are laid out in one array, then hashed band by band.
    """
    if len(sig) != PERMUTATIONS or max(sig) >> 40:
        raise ValueError(f"a signature is {PERMUTATIONS} values below 2**40")
    values = np.asarray(sig, dtype=">u8").view(np.uint8).reshape(BANDS, ROWS, 8)
    layout = np.empty((BANDS, _BAND_BYTES), dtype=np.uint8)
    layout[:, :2] = _BAND_INDEXES
    layout[:, 2:] = values[:, :, 3:].reshape(BANDS, 5 * ROWS)  # the low 5 bytes of each
    data, blake2b = layout.tobytes(), hashlib.blake2b
    digests = b"".join(
        [blake2b(data[i : i + _BAND_BYTES], digest_size=8).digest()
         for i in range(0, len(data), _BAND_BYTES)]
    )  # fmt: skip
    return tuple(np.frombuffer(digests, dtype=">i8").tolist())


def sketch(text: str, normalised: str | None = None) -> Sketch | None:
    """The sketch of an article body (``normalised``: the body through normalise_text, when
    at hand); None when it is too short to near-merge safely."""
    tokens = words(text) if normalised is None else normalised.split()
    if len(tokens) < MIN_WORDS:
        return None
    ids = _shingles(tokens)
    return Sketch(shingles=ids, bands=bands(signature(ids)))


def estimate(a: Sequence[int], b: Sequence[int]) -> float:
    """Jaccard similarity estimated from two signatures (the share of equal minima)."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def similarity(a: frozenset[int], b: frozenset[int]) -> Similarity:
    """Exact Jaccard, containment and length ratio of two shingle sets (symmetric)."""
    if not a or not b:
        return Similarity(1.0 if a == b else 0.0, 0.0, 0.0)
    shared = len(a & b)
    small, large = sorted((len(a), len(b)))
    return Similarity(shared / (len(a) + len(b) - shared), shared / small, small / large)


def best_match(new: frozenset[int], stored: Iterable[tuple[int, frozenset[int]]]) -> Match | None:
    """The closest stored article that is at least STORY-similar.

    Duplicates beat story members, then higher Jaccard, then the lowest id, so the choice does
    not depend on the order candidates are listed in.
    """
    best: Match | None = None
    for article_id, ids in stored:
        sim = similarity(new, ids)
        rel = sim.relation
        if rel is Relation.NONE:
            continue
        if best is None or _rank(rel, sim, article_id) > _rank(
            best.relation, best.similarity, best.article_id
        ):
            best = Match(article_id, rel, sim)
    return best


def _rank(rel: Relation, sim: Similarity, article_id: int) -> tuple[int, float, int]:
    return rel.value, sim.jaccard, -article_id
