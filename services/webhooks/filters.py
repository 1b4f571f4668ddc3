"""Subscription filters: validation of what a client sends, and matching events. Pure.

Within one kind of filter any value matches (OR); across kinds every kind given must match
(AND). Article filters (entities, keywords, languages) apply to article events; the feed
filter applies to every event that names a feed. Event types are always checked.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.core.errors import InvalidInput

ARTICLE_TYPES = frozenset({"article.created", "article.updated"})
EVENT_TYPES = (
    "article.created",
    "article.updated",
    "feed.error",
    "feed.recovered",
    "subscription.disabled",
)
DEFAULT_EVENT_TYPES = ("article.created",)
FILTER_KINDS = frozenset({"feeds", "entities", "keywords", "languages"})
MAX_VALUES = 50
MAX_VALUE_CHARS = 200
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class Filters:
    feeds: tuple[int, ...] = ()
    entities: tuple[int | str, ...] = ()  # ids, or names/aliases resolved at match time
    keywords: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "feeds": list(self.feeds),
            "entities": list(self.entities),
            "keywords": list(self.keywords),
            "languages": list(self.languages),
        }

    @property
    def entity_names(self) -> tuple[str, ...]:
        return tuple(e for e in self.entities if isinstance(e, str))


@dataclass(frozen=True)
class Candidate:
    """What matching needs to know about one event."""

    type: str
    feed_ids: frozenset[int] = frozenset()
    entity_ids: frozenset[int] = frozenset()
    language: str | None = None
    text: str = ""  # title and body, for keywords


def _invalid(message: str, param: str) -> InvalidInput:
    return InvalidInput(message, param=param, code="invalid_filter")


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_VALUES:
        raise _invalid(f"filters.{name} must be a list of at most {MAX_VALUES}", f"filters.{name}")
    return value


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE_CHARS:
        raise _invalid(
            f"{param} values must be strings of 1 to {MAX_VALUE_CHARS} characters", param
        )
    return value.strip()


def parse_filters(data: Any) -> Filters:
    """Validate ``{"feeds": [ids], "entities": [ids or names], "keywords": [...],
    "languages": ["en", ...]}`` (every key optional).

    Raises:
        InvalidInput: code ``invalid_filter``, naming the offending key.
    """
    if data is None:
        return Filters()
    if not isinstance(data, dict):
        raise _invalid("filters must be an object", "filters")
    unknown = sorted(set(data) - FILTER_KINDS)
    if unknown:
        raise _invalid(
            f"unknown filter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(FILTER_KINDS))}",
            "filters",
        )
    feeds = []
    for value in _list(data, "feeds"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid("filters.feeds values must be feed ids", "filters.feeds")
        feeds.append(value)
    entities: list[int | str] = []
    for value in _list(data, "entities"):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            entities.append(value)
        else:
            entities.append(_text(value, "filters.entities"))
    keywords = [_text(v, "filters.keywords") for v in _list(data, "keywords")]
    languages = []
    for value in _list(data, "languages"):
        code = _text(value, "filters.languages").lower()
        if not _LANGUAGE.fullmatch(code):
            raise _invalid(
                "filters.languages values are ISO 639-1 codes like en", "filters.languages"
            )
        languages.append(code)
    return Filters(
        tuple(dict.fromkeys(feeds)),
        tuple(dict.fromkeys(entities)),
        tuple(dict.fromkeys(keywords)),
        tuple(dict.fromkeys(languages)),
    )


def parse_event_types(data: Any) -> tuple[str, ...]:
    """Validate a list of event types (None: ``article.created`` only)."""
    if data is None:
        return DEFAULT_EVENT_TYPES
    if not isinstance(data, list) or not data or len(data) > len(EVENT_TYPES):
        raise InvalidInput(
            "event_types must be a non-empty list of event types", param="event_types"
        )
    unknown = sorted({t for t in data if t not in EVENT_TYPES}, key=str)
    if unknown:
        raise InvalidInput(
            f"unknown event type(s) {unknown}; allowed: {', '.join(EVENT_TYPES)}",
            param="event_types",
        )
    return tuple(dict.fromkeys(data))


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    """Any of ``keywords`` as whole words (or phrases), case-insensitively."""
    alternatives = "|".join(re.escape(k) for k in keywords)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def matches(
    filters: Filters,
    event_types: Collection[str],
    event: Candidate,
    *,
    entity_ids: Collection[int] = frozenset(),
) -> bool:
    """Whether a subscription with ``filters`` wants ``event``.

    ``entity_ids``: the filter's entity ids plus the ids its names resolve to.
    """
    if event.type not in event_types:
        return False
    if filters.feeds and event.feed_ids and not event.feed_ids & set(filters.feeds):
        return False
    if filters.feeds and not event.feed_ids and event.type in ARTICLE_TYPES:
        return False
    if event.type not in ARTICLE_TYPES:
        return True
    if filters.entities and not event.entity_ids & set(entity_ids):
        return False
    if filters.languages and event.language not in filters.languages:
        return False
    return not filters.keywords or bool(keyword_pattern(filters.keywords).search(event.text))
