"""Item identity: the stable key of a feed item or file, and the hash that says it changed."""

from __future__ import annotations

import hashlib

# Keys are stored, logged and sent in job payloads; a feed that puts a megabyte in <guid>
# must not make every one of those copies a megabyte long.
MAX_KEY_CHARS = 2048
FIELD_SEPARATOR = "\x1f"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def item_key(guid: str | None, link: str | None, title: str | None, content: str | None) -> str:
    """The identity of one feed item: its GUID, else its link, else a hash of what it says.

    Surrounding whitespace is ignored. A key longer than ``MAX_KEY_CHARS`` is replaced by
    ``"sha256:" + hex digest`` of itself, so it stays stable and bounded.
    """
    for candidate in (guid, link):
        text = (candidate or "").strip()
        if text:
            return text if len(text) <= MAX_KEY_CHARS else "sha256:" + _sha256(text)
    body = FIELD_SEPARATOR.join(((title or "").strip(), (content or "").strip()))
    return "sha256:" + _sha256(body)


def item_content_hash(
    title: str | None, link: str | None, summary: str | None, content: str | None
) -> str:
    """sha256 hex of the fields a reader sees; dates are left out on purpose.

    A feed that only re-stamps ``pubDate`` or ``lastBuildDate`` does not look changed.
    """
    return _sha256(FIELD_SEPARATOR.join(v or "" for v in (title, link, summary, content)))
