"""Query-string and path parsing: strict parameter sets, bounded limits, opaque cursors, ids."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web
from multidict import MultiMapping

from services.core import search
from services.core.entities import LABEL_TYPES
from services.core.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns
MAX_CURSOR_CHARS = 512
MAX_ENTITY_REFS = 10
MAX_TEXT_PARAM = 512
ENTITY_TYPES = frozenset(LABEL_TYPES.values())

_DIGITS = re.compile(r"[0-9]{1,10}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID_LIST = re.compile(r"[0-9]{1,10}(?:\s*,\s*[0-9]{1,10})+")


def check_query(
    request: web.Request, allowed: Collection[str], *, repeatable: Collection[str] = ()
) -> None:
    """Refuse a query string that is not UTF-8, unknown parameters and repeated ones."""
    for pair in request.rel_url.raw_query_string.split("&"):
        name, _, value = pair.partition("=")
        try:
            unquote_to_bytes(value.replace("+", " ")).decode()
            name = unquote_to_bytes(name.replace("+", " ")).decode()
        except UnicodeDecodeError:
            shown = unquote(name, errors="replace")[:40]
            raise InvalidInput(
                f"query parameter {shown!r} is not percent-encoded UTF-8",
                param=shown,
                code="invalid_encoding",
            ) from None
    check_names(request.query, allowed, repeatable=repeatable)


def check_text(value: str, param: str) -> str:
    """``value`` unless it holds NUL or a lone surrogate, which no database column can store."""
    if "\x00" in value or _SURROGATE.search(value):
        raise InvalidInput(
            f"{param} must not contain NUL characters or unpaired surrogates",
            param=param,
            code="invalid_text",
        )
    return value


def check_names(
    query: MultiMapping[str], allowed: Collection[str], *, repeatable: Collection[str] = ()
) -> None:
    """Refuse unknown parameters (naming them) and repeats of single-valued ones."""
    unknown = sorted({name for name in query if name not in allowed})
    if unknown:
        names = ", ".join(unknown)
        raise InvalidInput(
            f"unknown query parameter(s): {names}; allowed: {', '.join(sorted(allowed)) or 'none'}",
            param=names,
            code="unknown_parameter",
        )
    for name in allowed:
        if name not in repeatable and len(query.getall(name, [])) > 1:
            raise InvalidInput(f"{name} may be given only once", param=name)


def single(query: MultiMapping[str], name: str) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > MAX_TEXT_PARAM:
        raise InvalidInput(f"{name} is longer than {MAX_TEXT_PARAM} characters", param=name)
    return None if value is None else check_text(value, name)


def limit(query: MultiMapping[str], *, most: int = MAX_LIMIT) -> int:
    """``limit``: a whole number from 1 to ``most`` (200 unless given), default 50."""
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= most:
        raise InvalidInput(f"limit must be a whole number from 1 to {most}", param="limit")
    return int(raw)


def parse_id(raw: str, *, param: str = "id") -> int:
    """A record id from a path segment or query value; 400 unless a positive 32-bit integer."""
    raw = raw.strip()
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_ID:
        raise InvalidInput(
            f"{param} must be a positive whole number, got {raw[:40]!r}", param=param
        )
    return int(raw)


def optional_id(query: MultiMapping[str], name: str) -> int | None:
    raw = single(query, name)
    return None if raw is None else parse_id(raw, param=name)


def entity_refs(query: MultiMapping[str]) -> list[str]:
    """``entity`` values: repeatable; one value may also list ids separated by commas.

    Names are never split on commas, because names contain them ("Washington, D.C.").
    """
    refs: list[str] = []
    for raw in query.getall("entity", []):
        value = raw.strip()
        if not value or len(value) > MAX_TEXT_PARAM:
            raise InvalidInput(
                f"entity must be an id or a name of 1 to {MAX_TEXT_PARAM} characters",
                param="entity",
            )
        if _ID_LIST.fullmatch(value):
            refs.extend(part.strip() for part in value.split(","))
        else:
            refs.append(check_text(value, "entity"))
    if len(refs) > MAX_ENTITY_REFS:
        raise InvalidInput(f"at most {MAX_ENTITY_REFS} entity filters", param="entity")
    return refs


def search_query(query: MultiMapping[str]) -> search.Query | None:
    """``q``: a full-text query in the syntax of :mod:`services.core.search`; 400 if invalid."""
    raw = query.get("q")
    if raw is None:
        return None
    return search.parse(check_text(raw, "q"))


def entity_type(query: MultiMapping[str]) -> str | None:
    value = single(query, "type")
    if value is None:
        return None
    if value not in ENTITY_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(sorted(ENTITY_TYPES))}", param="type")
    return value


def encode_cursor(kind: str, *values: Any) -> str:
    """An opaque cursor: urlsafe base64 of JSON naming the listing it belongs to."""
    data = json.dumps({"k": kind, "v": list(values)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _decode_cursor(query: MultiMapping[str], kind: str, arity: int) -> list[Any] | None:
    raw = query.get("cursor")
    if raw is None:
        return None
    try:
        if len(raw) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError("not a cursor of this listing")
        values = data.get("v")
        if not isinstance(values, list) or len(values) != arity:
            raise ValueError("wrong shape")
        return values
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidInput("cursor is not one this listing returned", param="cursor") from None


def _cursor_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidInput("cursor is not one this listing returned", param="cursor")
    return value


def article_cursor(query: MultiMapping[str]) -> tuple[datetime, int] | None:
    values = _decode_cursor(query, "articles", 2)
    if values is None:
        return None
    try:
        when = datetime.fromisoformat(values[0])
        if when.tzinfo is None:
            raise ValueError("naive time")
        when = when.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("cursor is not one this listing returned", param="cursor") from None
    return when, _cursor_int(values[1])


def encode_article_cursor(sort_at: datetime, article_id: int) -> str:
    return encode_cursor("articles", sort_at.astimezone(UTC).isoformat(), article_id)


def entity_cursor(query: MultiMapping[str]) -> tuple[int, int] | None:
    values = _decode_cursor(query, "entities", 2)
    if values is None:
        return None
    return _cursor_int(values[0]), _cursor_int(values[1])


def feed_cursor(query: MultiMapping[str]) -> int:
    """The id after which a feeds page starts (0: from the beginning)."""
    values = _decode_cursor(query, "feeds", 1)
    return 0 if values is None else _cursor_int(values[0])
