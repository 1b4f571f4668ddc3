"""HTTP timing headers as numbers: Retry-After and cache freshness, given ``now``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as an aware UTC datetime, else None."""
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # asctime carries no zone; HTTP dates are always GMT
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value.

    Args:
        value: delay-seconds (``"120"``) or an HTTP-date.
        now: the instant the delay counts from (the response's ``Date`` is the best choice,
            as it shares the server's clock).

    Returns:
        The delay, never negative (a past date or a negative number gives 0), or None when the
        value is neither form.
    """
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        when = parse_http_date(text)
        if when is None:
            return None
        return max(0.0, (when - _aware(now)).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def parse_cache_lifetime(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the response stays fresh, from Cache-Control, Age, Expires and Date.

    ``max-age`` (else ``s-maxage``) minus ``Age`` wins; otherwise ``Expires`` minus ``Date``
    (or ``now`` without a valid Date) minus ``Age``. Never negative; a malformed max-age or
    Expires means already stale (0, as RFC 9111 asks).

    Returns:
        None when the response forbids reuse (``no-store``/``no-cache``) or gives no hint.
    """
    lowered = {key.lower(): val for key, val in headers.items()}
    directives = _cache_control(lowered.get("cache-control", ""))
    if "no-store" in directives or "no-cache" in directives:
        return None
    age = _age(lowered.get("age"))
    for name in ("max-age", "s-maxage"):
        if name in directives:
            raw = directives[name]
            if raw is None or not raw.isdigit():
                return 0.0
            return max(0.0, int(raw) - age)
    if "expires" not in lowered:
        return None
    expires = parse_http_date(lowered["expires"])
    if expires is None:
        return 0.0
    date = parse_http_date(lowered["date"]) if "date" in lowered else None
    base = date if date is not None else _aware(now)
    return max(0.0, (expires - base).total_seconds() - age)


def _cache_control(value: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in value.split(","):
        name, eq, arg = part.strip().partition("=")
        if name:
            directives.setdefault(name.strip().lower(), arg.strip().strip('"') if eq else None)
    return directives


def _age(value: str | None) -> float:
    if value is None or not value.strip().isdigit():
        return 0.0
    return float(value.strip())


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
