"""Entity quality on a hand-annotated gold set of real articles: precision, recall and F1.

    python bench/entity_gold.py            # the table
    python bench/entity_gold.py --verify   # also re-read each text from its source capture

The gold set is ``bench/gold/*.json``, one real article each: the seed article and items of
the LA Times (title + ``content:encoded``), New York Times and BBC (title + description)
captures in ``/work/shared/data/feeds``. Each file keeps its provenance (capture file + GUID),
the exact text analysed (title, blank line, body) and the expected entities.

Annotation guidelines
---------------------
- Every distinct real-world entity the text names is annotated once per article, as
  ``{"name", "type"}``; types are ``person``, ``organization``, ``place``, ``facility``,
  ``event``, ``product``, ``law``, ``work``.
- Not annotated, and not scored: nationalities, religious and political groups
  (``group``: "Chinese", "Democrats", "Israelis"), dates, times and numbers, job titles and
  offices ("inspector general"), photo credits, captions and section labels ("The Papers").
- The name is the fullest form the text itself gives, without titles or honorifics
  ("President Trump" -> "Trump", "Sen. Kamala Harris" -> "Kamala Harris"), possessive or
  leading "the". A partial name of someone named in full in the same text is that person
  ("Pompeo" -> "Mike Pompeo"), listed under ``aliases``; a surname alone stays a surname.
- A country is annotated under its gazetteer name whatever the spelling ("U.S.", "America"
  -> "United States"; "Britain", "UK" -> "United Kingdom"), also inside a title
  ("U.S. District Judge"). Other places as written ("L.A. County").
- An organisation named by metonymy is an organisation ("the White House has sought",
  "City Hall scandal"). A name inside a longer name is not annotated separately ("Los
  Angeles County" in "Los Angeles County Sheriff's Department").
- ``aliases`` lists other spellings of the same entity in the text (or standard variants,
  "State Dept."); a prediction matching the name or an alias, with the same type, counts.

Scoring: per article, the distinct predicted (name, type) pairs are matched to gold entities
by :func:`services.core.entities.entity_key` of the name or an alias and by type; a second
prediction matching an already matched gold entity (an entity split in two) is a false
positive. Micro-averaged over all articles; ``untyped`` ignores the type.

Systems: (a) raw spaCy (model labels mapped to our types, surface strings); (b) our
within-article canonicalisation; (b+) plus cross-article resolution rules (gazetteer, org
forms); (c) plus recall from knowledge with the country gazetteer; (c+) plus the names our
system found in the other gold articles (leave-one-out, with the evidence ``known_names``
asks for: two articles, five for a one-word name); (c+ min2) the same with two articles
for one-word names too, to show what that threshold costs on a set this small.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.core.entities import LABEL_TYPES, canonicalise, entity_key  # noqa: E402
from services.core.entity_recall import KnownName  # noqa: E402
from services.core.entity_resolution import resolve  # noqa: E402
from services.core.gazetteer import default_gazetteer  # noqa: E402

GOLD_DIR = Path(__file__).resolve().parent / "gold"
FEEDS_DIR = Path("/work/shared/data/feeds")
SCORED_TYPES = frozenset(
    {"person", "organization", "place", "facility", "event", "product", "law", "work"}
)
# Evidence a name needs to be learned, as services.db.entity_names.known_names loads them.
MIN_ARTICLES = 2
MIN_ARTICLES_ONE_WORD = 5

Pair = tuple[str, str]  # (name, type)


@dataclass(frozen=True)
class GoldArticle:
    id: str
    source: dict[str, Any]
    text: str
    entities: tuple[tuple[frozenset[str], str], ...]  # (keys of name + aliases, type)


def load_gold(directory: Path = GOLD_DIR) -> list[GoldArticle]:
    articles = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        entities = tuple(
            (frozenset(entity_key(n) for n in [e["name"], *e.get("aliases", [])]), e["type"])
            for e in doc["entities"]
        )
        articles.append(GoldArticle(doc["id"], doc["source"], doc["text"], entities))
    return articles


def score(gold: Sequence[GoldArticle], predicted: Sequence[Sequence[Pair]]) -> dict[str, Any]:
    """Micro precision, recall and F1 of ``predicted`` (one list per gold article)."""
    typed, untyped = Counter[str](), Counter[str]()
    for article, pairs in zip(gold, predicted, strict=True):
        found = list(dict.fromkeys((entity_key(n), t) for n, t in pairs if t in SCORED_TYPES))
        _match(article, found, typed, use_type=True)
        _match(article, found, untyped, use_type=False)
    return _figures(typed) | {"untyped_f1": _figures(untyped)["f1"]}


def _match(article: GoldArticle, found: list[Pair], counts: Counter[str], use_type: bool) -> None:
    matched: set[int] = set()
    for key, kind in found:
        hits = [
            i
            for i, (keys, gold_type) in enumerate(article.entities)
            if key in keys and (gold_type == kind or not use_type)
        ]
        fresh = [i for i in hits if i not in matched]
        if fresh:
            matched.add(fresh[0])
            counts["tp"] += 1
        else:
            counts["fp"] += 1
    counts["fn"] += len(article.entities) - len(matched)


def _figures(c: Counter[str]) -> dict[str, Any]:
    p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": c["tp"], "fp": c["fp"], "fn": c["fn"]}


def _resolved(text: str, mentions: Sequence[Any]) -> list[Pair]:
    gazetteer = default_gazetteer()
    out = []
    for entity in canonicalise(text, mentions):
        res = resolve(entity, gazetteer)
        out.append((res.name, res.type))
    return out


def _learned(
    outputs: Sequence[Sequence[Pair]], leave_out: int, one_word: int = MIN_ARTICLES_ONE_WORD
) -> list[KnownName]:
    seen = Counter[Pair]()
    for i, pairs in enumerate(outputs):
        if i != leave_out:
            seen.update(set(pairs))
    return [
        KnownName(name, kind)
        for (name, kind), n in seen.items()
        if n >= (MIN_ARTICLES if len(name.split()) > 1 else one_word)
    ]


def entity_quality(gold_dir: Path = GOLD_DIR) -> dict[str, Any]:
    """Figures for each system on the gold set (loads the spaCy model once)."""
    from workers.nlp import Recogniser, load_model

    gold = load_gold(gold_dir)
    nlp = load_model()
    raw = Recogniser(nlp, recall=False)
    known = Recogniser(nlp)
    texts = [a.text for a in gold]
    model = [raw.recognise(t) for t in texts]
    systems: dict[str, list[list[Pair]]] = {
        "a_raw_spacy": [
            [(m.text, LABEL_TYPES[m.label]) for m in ms if m.label in LABEL_TYPES] for ms in model
        ],
        "b_canonicalised": [
            [(e.name, e.type) for e in canonicalise(t, ms)]
            for t, ms in zip(texts, model, strict=True)
        ],
        "b+_resolved": [_resolved(t, ms) for t, ms in zip(texts, model, strict=True)],
        "c_recall_gazetteer": [_resolved(t, known.recognise(t)) for t in texts],
    }
    for name, one_word in (("c+_recall_learned", MIN_ARTICLES_ONE_WORD), ("c+_one_word_min2", 2)):
        learned: list[list[Pair]] = []
        for i, text in enumerate(texts):
            known.refresh_known(_learned(systems["c_recall_gazetteer"], i, one_word))
            learned.append(_resolved(text, known.recognise(text)))
        systems[name] = learned
    return {
        "articles": len(gold),
        "gold_entities": sum(len(a.entities) for a in gold),
        "systems": {name: score(gold, preds) for name, preds in systems.items()},
    }


def verify_sources(gold_dir: Path = GOLD_DIR, feeds_dir: Path = FEEDS_DIR) -> list[str]:
    """Ids of gold articles whose text no longer matches their source capture."""
    import feedparser

    from services.core.plaintext import parse_plaintext

    bad = []
    for article in load_gold(gold_dir):
        source: dict[str, Any] = article.source
        if source["guid"] is None:
            parsed = parse_plaintext((ROOT / source["file"]).read_text(encoding="utf-8"))
            text: str | None = f"{parsed.title}\n\n{parsed.body}"
        else:
            text = _feed_text(feedparser.parse((feeds_dir / source["file"]).read_bytes()), source)
        if text != article.text:
            bad.append(article.id)
    return bad


def _feed_text(feed: Any, source: dict[str, Any]) -> str | None:
    for entry in feed.entries:
        if (entry.get("id") or entry.get("link")) == source["guid"]:
            field = source["fields"][1]
            body = entry["content"][0]["value"] if field == "content:encoded" else entry.summary
            plain = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))).strip()
            return f"{entry.title}\n\n{plain}"
    return None


def _table(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out(f"{result['articles']} articles, {result['gold_entities']} gold entities")
    head = ("P", "R", "F1", "TP", "FP", "FN")
    widths = (6, 6, 6, 4, 4, 4)
    out(f"{'system':<22} " + " ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for name, s in result["systems"].items():
        out(
            f"{name:<22} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} "
            f"{s['tp']:4d} {s['fp']:4d} {s['fn']:4d}   untyped F1 {s['untyped_f1']:.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="check texts against sources")
    args = parser.parse_args(argv)
    if args.verify:
        bad = verify_sources()
        print("sources: all texts match" if not bad else f"sources differ: {', '.join(bad)}")
    _table(entity_quality())


if __name__ == "__main__":
    main()
