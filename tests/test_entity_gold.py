"""The entity gold set is well-formed, and the quality bench runs on it with the real model."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from services.core.gazetteer import default_gazetteer
from tests.benches import load
from tests.conftest import REPO

GOLD = sorted((REPO / "bench" / "gold").glob("*.json"))
TYPES = {"person", "organization", "place", "facility", "event", "product", "law", "work"}


def bench() -> ModuleType:
    return load("entity_gold")


def test_at_least_fifteen_real_articles() -> None:
    assert len(GOLD) >= 15
    files = {json.loads(p.read_text(encoding="utf-8"))["source"]["file"] for p in GOLD}
    assert any(f.startswith("latimes") for f in files) and "seeds/000_a39bf01833f5003a.txt" in files


@pytest.mark.parametrize("path", GOLD, ids=lambda p: p.stem)
def test_gold_file(path: Any) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["id"] == path.stem and doc["text"].strip()
    assert doc["source"]["file"] and ("guid" in doc["source"])
    assert doc["entities"], "every gold article names something"
    for entity in doc["entities"]:
        assert entity["type"] in TYPES
        names = [entity["name"], *entity.get("aliases", [])]
        written = any(n in doc["text"] for n in names)
        assert written or default_gazetteer().country(entity["name"]) is not None, names


def test_scoring_counts_a_split_entity_as_a_false_positive() -> None:
    gold = bench()
    article = gold.GoldArticle("x", {}, "", ((frozenset({"joe biden", "biden"}), "person"),))
    result = gold.score([article], [[("Joe Biden", "person"), ("Biden", "person")]])
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 0)
    result = gold.score([article], [[("Biden", "organization"), ("Americans", "group")]])
    assert (result["tp"], result["fp"], result["fn"], result["untyped_f1"]) == (0, 1, 1, 1.0)


def test_entity_quality_improves_at_each_stage(recogniser: Any) -> None:
    result = bench().entity_quality()
    f1 = {name: s["f1"] for name, s in result["systems"].items()}
    assert result["articles"] == len(GOLD)
    assert f1["a_raw_spacy"] < f1["b_canonicalised"] < f1["b+_resolved"]
    assert f1["b+_resolved"] < f1["c_recall_gazetteer"] <= f1["c+_recall_learned"]
