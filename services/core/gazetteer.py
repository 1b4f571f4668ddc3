"""Country gazetteer: every safe spelling of a country (pycountry + a curated supplement)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from services.core.entities import entity_key

DATA_FILE = Path(__file__).parent / "data" / "gazetteer.json"
# A country qualifier is at most this many words ("United States of America").
MAX_QUALIFIER_WORDS = 4


@dataclass(frozen=True)
class Country:
    """One country: ISO alpha-2 code, display name and every spelling recognised as it."""

    code: str
    name: str
    names: tuple[str, ...]


class Gazetteer:
    """Looks countries up by any of their names (through :func:`entity_key`)."""

    def __init__(
        self,
        countries: Iterable[Country],
        *,
        no_recall: Iterable[str] = (),
        common_words: Iterable[str] = (),
    ) -> None:
        self.countries = tuple(countries)
        self.common_words = frozenset(w.casefold() for w in common_words)
        self._no_recall = frozenset(entity_key(n) for n in no_recall)
        by_key: dict[str, Country | None] = {}
        for country in self.countries:
            for name in country.names:
                key = entity_key(name)
                if by_key.get(key, country) is not country:
                    by_key[key] = None  # two countries claim this spelling: it names neither
                else:
                    by_key[key] = country
        self._by_key = {k: c for k, c in by_key.items() if c is not None and k}

    def country(self, name: str) -> Country | None:
        """The country ``name`` (any spelling, any case, dots optional) denotes, if any.

        A leading "the" is ignored: "the States" and "States" are both the United States.
        """
        key = entity_key(name)
        bare = key[4:] if key.startswith("the ") else key
        return self._by_key.get(bare) or self._by_key.get("the " + bare)

    def qualifier(self, name: str) -> tuple[Country, str] | None:
        """Split a leading country name off ``name``: "U.S. State Department" -> (US, rest).

        The rest must start with a capital letter; the longest country prefix wins.
        """
        words = name.split()
        for n in range(min(MAX_QUALIFIER_WORDS, len(words) - 1), 0, -1):
            country = self._by_key.get(entity_key(" ".join(words[:n])))
            rest = " ".join(words[n:])
            if country is not None and rest[:1].isupper():
                return country, rest
        return None

    def recall_names(self) -> list[str]:
        """Spellings safe to recognise in text by themselves (not the ambiguous ones)."""
        names: list[str] = []
        for country in self.countries:
            for name in country.names:
                if entity_key(name) in self._no_recall:
                    continue
                if name.startswith("the "):
                    names.append("The " + name[4:])
                if name[:1].isupper() or name.startswith("the "):
                    names.append(name)
        return names


def build(countries: Iterable[Any], supplement: Mapping[str, Any]) -> Gazetteer:
    """A gazetteer from pycountry-like records and the curated supplement (see the data file)."""
    canonical: Mapping[str, str] = supplement.get("canonical", {})
    extra: Mapping[str, list[str]] = supplement.get("extra_names", {})
    codes: dict[str, list[str]] = {}
    for code, alpha_2 in supplement.get("safe_codes", {}).items():
        codes.setdefault(alpha_2, []).extend([code, ".".join(code) + "."])
    built: list[Country] = []
    for record in countries:
        code = str(record.alpha_2)
        official = [getattr(record, "official_name", None), getattr(record, "common_name", None)]
        spellings = [str(record.name), *(str(n) for n in official if n)]
        spellings += extra.get(code, []) + codes.get(code, [])
        spellings = [_tidy(n) for n in spellings if "," not in n and "(" not in n]
        if not spellings and code not in canonical:
            continue  # only comma or bracket forms ("Cocos (Keeling) Islands"): not prose
        name = canonical.get(code) or getattr(record, "common_name", None) or spellings[0]
        folded = [_ascii(n) for n in spellings]
        names = tuple(dict.fromkeys([name, *spellings, *folded]))
        built.append(Country(code=code, name=name, names=names))
    return Gazetteer(
        built,
        no_recall=supplement.get("no_recall", ()),
        common_words=supplement.get("common_words", ()),
    )


@cache
def default_gazetteer() -> Gazetteer:
    """The gazetteer of the installed pycountry and the bundled supplement, built once."""
    import pycountry

    supplement = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return build(pycountry.countries, supplement)


def _tidy(name: str) -> str:
    """Official names come as "the State of Palestine": the article is not part of the name."""
    return name[4:] if name.startswith("the ") and name != "the States" else name


def _ascii(name: str) -> str:
    """ "Åland Islands" -> "Aland Islands": the spelling most English copy uses."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
