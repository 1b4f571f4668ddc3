"""Feed URL validation shared by the API and the CLI: one rule for what may be registered."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from services.core.errors import InvalidInput

# Equal to the width of the feeds.url column (services.db.models.URL_LENGTH; a test checks).
MAX_URL_CHARS = 2048


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, param="url", code="invalid_url")


def normalise_feed_url(value: object) -> str:
    """An absolute http(s) URL naming a host, without credentials; scheme and host lowercased.

    Raises:
        InvalidInput: code ``invalid_url``, param ``url``, with the reason.
    """
    if not isinstance(value, str):
        raise _invalid("url must be a string")
    url = value.strip()
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"url is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise _invalid("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise _invalid("url is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("url must be an http:// or https:// URL")
    if not parts.hostname:
        raise _invalid("url must name a host")
    if parts.username is not None or parts.password is not None:
        # Credentials would be stored and shown by the API; refuse rather than leak them.
        raise _invalid("url must not contain credentials")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
