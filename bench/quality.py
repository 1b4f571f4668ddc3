"""Quality of newsdesk's decisions on real captures: duplicate detection (entities: later).

    python bench/quality.py

Duplicate detection is scored on labelled pairs of texts, next to a baseline: the exact
normalised-text hash the pipeline used before (``content_hash``: title + body, case and
punctuation folded). A pair counts as found when the two texts would land on one article:
equal hash, or both sketched (``MIN_WORDS``+), sharing an LSH band and verified DUPLICATE.

Labelled pairs, from the real captures in ``shared/data/feeds`` (50 captures of BBC, NYT and
LA Times feeds; falls back to ``tests/data/feeds``), each item extracted by the production
code (``parse_feed`` -> ``extract``):

- same GUID, edited text: every two distinct versions of one feed item across captures are
  the same article (``same_guid``);
- different GUIDs: not the same article, unless the title and body are identical
  (``identical``) or the pair is in ``REVIEWED_SAME``: every cross-GUID pair with 4-shingle
  Jaccard >= 0.3 was read by hand; the two LA Times stories republished by the San Diego
  Union-Tribune are the only real syndication among them (the others are daily templates:
  "Five things you need to know...", "Here's what you need to know", case-count updates);
- constructed syndication (``constructed``): each real text of 40+ words (the seed article and
  the LA Times items) as another outlet runs it: new headline + "(AP) —" credit; credit +
  last sentence rewritten; credit + tail cut to ~70%; a contributor tagline appended. All
  variants of one original are the same article. A follow-up (first half of the original,
  then another real text) is the same *story* but not the same article.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.core import neardup  # noqa: E402
from services.core.errors import NewsdeskError  # noqa: E402
from services.core.extract import ItemPayload, extract  # noqa: E402
from services.core.fingerprint import text_hash  # noqa: E402
from services.core.plaintext import parse_plaintext  # noqa: E402
from services.poller.payloads import feed_payload  # noqa: E402
from services.sources.feed import parse_feed  # noqa: E402

SHARED_FEEDS = ROOT.parent / "shared" / "data" / "feeds"
TEST_FEEDS = ROOT / "tests" / "data" / "feeds"
SEED = ROOT / "seeds" / "000_a39bf01833f5003a.txt"
# URL slugs of the cross-GUID pairs that hand review found to be one article (see above).
REVIEWED_SAME = frozenset(
    {
        "newsom-coronavirus-homeless-population-hotel-project-roomkey",
        "coronavirus-cancellation-50th-anniversary-chicano-park-day-murals-san-diego-veteranos",
    }
)
_SENTENCE = re.compile(r"(?<=[.!?”\"])\s+")


@dataclass(frozen=True)
class Doc:
    """One distinct text: which article it belongs to (``group``) and its story."""

    key: str
    group: str
    story: str
    title: str
    body: str
    kind: str  # real | constructed

    @property
    def content_hash(self) -> str:
        return text_hash(f"{self.title}\n{self.body}")


def real_docs(folder: Path) -> list[Doc]:
    """Distinct versions of every item of every capture, grouped by feed + GUID."""
    seen: dict[tuple[str, str], Doc] = {}
    for path in sorted(folder.glob("*__*.xml")):
        feed = path.name.split("__")[0]
        try:
            parsed = parse_feed(path.read_bytes(), url="https://news.example/feed.xml")
        except NewsdeskError:
            continue
        for item in parsed.items:
            try:
                ex = extract(ItemPayload.from_dict(feed_payload(1, item)))
            except NewsdeskError:
                continue
            group = f"{feed}:{item.item_key}"
            doc = Doc(f"{group}#{ex.content_hash[:8]}", group, group, ex.title, ex.text, "real")
            seen.setdefault((group, doc.content_hash), doc)
    return list(seen.values())


def _sentences(body: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(body.split())) if s]


def constructed_docs(originals: list[Doc], fillers: list[str]) -> Iterator[Doc]:
    """Syndication variants of each long original, and one follow-up per original.

    Variants belong to the original's article. The follow-up keeps the first half of the
    original's sentences and adds as many words of other real text (short real descriptions,
    ``fillers``, which belong to no original): same story, another article.
    """
    pool = itertools.cycle(fillers)
    for doc in originals:
        sentences = _sentences(doc.body)
        credit = "WASHINGTON (AP) — "
        cut = max(1, round(len(sentences) * 0.7))
        rewritten = [*sentences[:-1], "More details are expected to be released later this week."]
        variants = {
            "credit": (f"Wire: {doc.title}", credit + doc.body),
            "credit_edit": (doc.title, credit + " ".join(rewritten)),
            "trim": (doc.title, credit + " ".join(sentences[:cut])),
            "tagline": (doc.title, doc.body + "\n\nAP writer Ann Lee contributed to this report."),
        }
        for name, (title, body) in variants.items():
            yield Doc(f"{doc.group}:{name}", doc.group, doc.group, title, body, "constructed")
        if len(sentences) < 2:
            continue
        half = sentences[: len(sentences) // 2]
        need = len(" ".join(sentences[len(half) :]).split())
        new = [next(pool)]
        while sum(len(t.split()) for t in new) < need:
            new.append(next(pool))
        yield Doc(
            f"{doc.group}:follow_up", f"{doc.group}:follow_up", doc.group, f"Update: {doc.title}",
            " ".join(half) + "\n\n" + "\n\n".join(new), "constructed",
        )  # fmt: skip


def _pairs_by_bucket(buckets: Iterable[list[int]]) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for members in buckets:
        if 1 < len(members) <= 500:  # a bigger bucket is boilerplate, like MAX_CANDIDATES
            found.update(itertools.combinations(sorted(members), 2))
    return found


def predictions(
    docs: list[Doc],
) -> tuple[set[tuple[int, int]], set[tuple[int, int]], dict[tuple[int, int], neardup.Similarity]]:
    """Pairs (doc indexes) the baseline and the detector put on one article, and the
    similarity of every pair that LSH made a candidate."""
    by_hash: defaultdict[str, list[int]] = defaultdict(list)
    by_band: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
    sketches = [neardup.sketch(d.body) for d in docs]
    for i, (doc, sk) in enumerate(zip(docs, sketches, strict=True)):
        by_hash[doc.content_hash].append(i)
        for band in enumerate(sk.bands if sk else ()):
            by_band[band].append(i)
    baseline = _pairs_by_bucket(by_hash.values())
    relations: dict[tuple[int, int], neardup.Similarity] = {}
    for i, j in _pairs_by_bucket(by_band.values()):
        a, b = sketches[i], sketches[j]
        assert a is not None and b is not None
        relations[(i, j)] = neardup.similarity(a.shingles, b.shingles)
    near = {p for p, sim in relations.items() if sim.relation is neardup.Relation.DUPLICATE}
    return baseline, baseline | near, relations


def _slug(group: str) -> str:
    return group.rstrip("/").rsplit("/", 1)[-1]


def _positive_pairs(docs: list[Doc], long_groups: set[str]) -> dict[tuple[int, int], str]:
    """Every labelled same-article pair (doc indexes, low first) and why it is one."""
    buckets: dict[str, defaultdict[str, list[int]]] = {
        "group": defaultdict(list), "identical": defaultdict(list), "reviewed": defaultdict(list),
    }  # fmt: skip
    for i, doc in enumerate(docs):
        buckets["group"][doc.group].append(i)
        buckets["identical"][doc.content_hash].append(i)
        if _slug(doc.group) in REVIEWED_SAME:
            buckets["reviewed"][_slug(doc.group)].append(i)
    positives: dict[tuple[int, int], str] = {}
    for kind in ("group", "identical", "reviewed"):
        for members in buckets[kind].values():
            for i, j in itertools.combinations(sorted(members), 2):
                if kind == "group":
                    real = docs[i].kind == docs[j].kind == "real"
                    size = "100+w" if docs[i].group in long_groups else "40-99w"
                    label = "same_guid" if real else f"constructed_{size}"
                else:
                    label = kind
                positives.setdefault((i, j), label)
    return positives


def _score(found: set[tuple[int, int]], positives: dict[tuple[int, int], str]) -> dict[str, Any]:
    tp = sum(1 for p in found if p in positives)
    fp = len(found) - tp
    fn = len(positives) - tp
    by_kind: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pair, kind in positives.items():
        by_kind[kind][0] += pair in found
        by_kind[kind][1] += 1
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "recall_by_kind": {k: f"{hit}/{total}" for k, (hit, total) in sorted(by_kind.items())},
    }


def duplicate_quality(feeds: Path | None = None) -> dict[str, Any]:
    """Precision and recall of the detector and of the exact-hash baseline, per pair set."""
    folder = feeds or (SHARED_FEEDS if SHARED_FEEDS.is_dir() else TEST_FEEDS)
    seed = parse_plaintext(SEED.read_text("utf-8"))
    real = [Doc("seed", "seed", "seed", seed.title, seed.body, "real"), *real_docs(folder)]
    originals: dict[str, Doc] = {}  # one per article: the first long version
    fillers: list[str] = []
    for doc in real:
        if neardup.sketch(doc.body) is not None:
            originals.setdefault(doc.group, doc)
        elif len(doc.body.split()) >= 15:
            fillers.append(doc.body)
    docs = real + list(constructed_docs(list(originals.values()), fillers[::7]))
    baseline, detector, relations = predictions(docs)
    long_groups = {g for g, d in originals.items() if len(neardup.words(d.body)) >= 100}
    positives = _positive_pairs(docs, long_groups)
    index = {d.key: i for i, d in enumerate(docs)}
    follow = [i for i, d in enumerate(docs) if d.key.endswith(":follow_up")]
    # How each follow-up relates to its original, as the pipeline would see it (None: the
    # two never became LSH candidates).
    story_sims = [relations.get((index[originals[docs[i].story].key], i)) for i in follow]
    story_rel = [sim.relation if sim else None for sim in story_sims]
    distinct_real = [
        sim.jaccard
        for (i, j), sim in relations.items()
        if docs[i].kind == docs[j].kind == "real" and (i, j) not in positives
    ]
    false_pos = [(docs[i].key, docs[j].key) for i, j in sorted(detector) if (i, j) not in positives]
    return {
        "captures": str(folder),
        "thresholds": {
            "duplicate_jaccard": neardup.DUPLICATE,
            "contained": neardup.CONTAINED,
            "min_length_ratio": neardup.MIN_LENGTH_RATIO,
            "story_jaccard": neardup.STORY,
            "min_words": neardup.MIN_WORDS,
            "shingle_words": neardup.SHINGLE_WORDS,
        },
        "docs": {"real": len(real), "constructed": len(docs) - len(real)},
        "long_originals": len(originals),
        "originals_100w": len(long_groups),
        "pairs_verified": len(relations),
        "distinct_real_candidates": len(distinct_real),
        "max_jaccard_distinct_real": max(distinct_real, default=0.0),
        "positive_pairs": len(positives),
        "baseline": _score(baseline, positives),
        "detector": _score(detector, positives),
        "follow_ups": {
            "total": len(follow),
            "story": sum(r is neardup.Relation.STORY for r in story_rel),
            "duplicate": sum(r is neardup.Relation.DUPLICATE for r in story_rel),
        },
        "false_positives": false_pos[:10],
    }


def main() -> None:
    result = duplicate_quality()
    print(f"captures: {result['captures']}")
    print(f"thresholds: {result['thresholds']}")
    print(
        f"docs: {result['docs']}  originals of 40+ words: {result['long_originals']}"
        f" (100+: {result['originals_100w']})"
        f"  LSH candidate pairs verified: {result['pairs_verified']}"
    )
    print(
        "pairs of distinct real articles that became LSH candidates:"
        f" {result['distinct_real_candidates']}"
        f" (highest Jaccard {result['max_jaccard_distinct_real']:.3f})"
    )
    print(f"positive pairs: {result['positive_pairs']}")
    header = ("", "precision", "recall", "tp", "fp", "fn")
    print("{:10s} {:>9s} {:>7s} {:>5s} {:>4s} {:>5s}  recall by kind".format(*header))
    for name in ("baseline", "detector"):
        s = result[name]
        print(
            f"{name:10s} {s['precision']:9.3f} {s['recall']:7.3f} {s['tp']:5d} {s['fp']:4d}"
            f" {s['fn']:5d}  {s['recall_by_kind']}"
        )
    f = result["follow_ups"]
    print(f"follow-ups (same story, other article): {f['story']}/{f['total']} STORY,"
          f" {f['duplicate']} merged as duplicates")  # fmt: skip
    for a, b in result["false_positives"]:
        print(f"false positive: {a} ~ {b}")


if __name__ == "__main__":
    main()
