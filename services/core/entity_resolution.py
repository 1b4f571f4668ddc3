"""Where an article's entity belongs across articles: canonical name, lookup keys, fallbacks.

Rules, each applied only where the evidence is clear:

- a country under any spelling ("U.S.", "US", "America") is the place under its gazetteer
  name ("United States"), whether the model called it a place or an organisation;
- "Department of X" and "X Department" (likewise "Ministry") are one organisation, stored
  under the "X Department" form; a leading country name is keyed by the country's gazetteer
  name ("U.S. Postal Service" = "United States Postal Service");
- a leading country name is dropped from an organisation ("U.S. State Department") only when
  the rest, of two words or more, is an organisation already known, and that organisation is
  not known under another country's name (see :func:`qualifier_fits`);
- people are stored by their full name as the article gives it; a bare surname is its own
  entity and is never an alias of a full name (within one article the surname was already
  resolved by :func:`services.core.entities.canonicalise`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.core.entities import ArticleEntity, entity_key
from services.core.gazetteer import Gazetteer

# Organisation names with a "Department of X" form; X is at most this many words.
MAX_ORG_SUBJECT_WORDS = 5
_OF_FORM = re.compile(r"^(Department|Ministry) of (?:the )?(?P<subject>\S.*)$")
_COUNTRY_TYPES = frozenset({"place", "organization"})


@dataclass(frozen=True)
class Alias:
    """A name an entity is known by: lookup key and display text."""

    key: str
    text: str


@dataclass(frozen=True)
class Resolution:
    """Where one article entity belongs.

    Attributes:
        type: the entity type to store it under.
        key: the canonical key; a new entity is created under ``(type, key)``.
        name: the display name for a new entity.
        aliases: names to look the entity up by and to record as its aliases.
        fallback: keys tried when no alias is known (the name without a country qualifier).
        qualifier: ISO code of the country qualifier dropped in ``fallback``.
    """

    type: str
    key: str
    name: str
    aliases: tuple[Alias, ...]
    fallback: tuple[str, ...] = ()
    qualifier: str | None = None

    @property
    def lookup_keys(self) -> tuple[str, ...]:
        """The canonical key first, then the aliases' keys."""
        return tuple(dict.fromkeys([self.key, *(a.key for a in self.aliases)]))


def org_canonical(name: str) -> str:
    """ "Department of State" -> "State Department"; other names are returned unchanged."""
    match = _OF_FORM.match(name)
    if match is None or len(match["subject"].split()) > MAX_ORG_SUBJECT_WORDS:
        return name
    return f"{match['subject']} {match[1]}"


def resolve(entity: ArticleEntity, gazetteer: Gazetteer) -> Resolution:
    """The canonical identity of ``entity`` (pure: stored aliases are consulted by the caller)."""
    seen = Alias(entity.key, entity.name)
    if entity.type in _COUNTRY_TYPES:
        country = gazetteer.country(entity.name)
        if country is not None:
            canonical = Alias(entity_key(country.name), country.name)
            aliases = tuple(dict.fromkeys([canonical, seen]))
            return Resolution("place", canonical.key, country.name, aliases)
    if entity.type != "organization":
        return Resolution(entity.type, entity.key, entity.name, (seen,))
    key = entity_key(org_canonical(entity.name))
    qualified = gazetteer.qualifier(entity.name)
    if qualified is None:
        return Resolution(entity.type, key, entity.name, (seen,))
    country, rest = qualified
    # "U.S. Postal Service" and "United States Postal Service" are one key.
    key = entity_key(f"{country.name} {org_canonical(rest)}")
    if len(rest.split()) < 2:
        return Resolution(entity.type, key, entity.name, (seen,))
    rest_keys = tuple(dict.fromkeys([entity_key(org_canonical(rest)), entity_key(rest)]))
    return Resolution(entity.type, key, entity.name, (seen,), rest_keys, country.code)


def qualifier_fits(code: str, alias_texts: Iterable[str], gazetteer: Gazetteer) -> bool:
    """Whether an organisation known by ``alias_texts`` may take country ``code``'s qualifier.

    "British Army" may not join an "Army" already known as "U.S. Army".
    """
    for text in alias_texts:
        qualified = gazetteer.qualifier(text)
        if qualified is not None and qualified[0].code != code:
            return False
    return True


def reference_keys(ref: str, gazetteer: Gazetteer) -> list[str]:
    """Keys a client's entity reference may be stored under, of any type, most specific first.

    "America" -> ["america", "united states"]; "Department of State" adds "state department".
    """
    keys = [entity_key(ref)]
    country = gazetteer.country(ref)
    if country is not None:
        keys.append(entity_key(country.name))
    keys.append(entity_key(org_canonical(" ".join(ref.split()))))
    return [k for k in dict.fromkeys(keys) if k]
