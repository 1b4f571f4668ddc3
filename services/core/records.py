"""Typed records that cross package boundaries (storage -> API, poller -> worker)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Per-feed full-text modes: fetch the article page for items without full content (`auto`),
# for every item (`always`), or never.
FULLTEXT_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class FeedRecord:
    """A source and its polling state, as stored."""

    id: int
    url: str
    kind: str
    title: str | None
    site_url: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    interval_seconds: int
    next_poll_at: datetime
    last_polled_at: datetime | None
    last_success_at: datetime | None
    last_status: int | None
    error_count: int
    last_error_code: str | None
    last_error_detail: str | None
    disabled_at: datetime | None
    created_at: datetime
    disabled_reason: str | None = None
    interval_override: int | None = None
    ttl_seconds: int | None = None
    first_error_at: datetime | None = None
    throttled_until: datetime | None = None
    moved_from: str | None = None
    fulltext: str = "auto"

    @property
    def state(self) -> str:
        """``disabled``, ``throttled`` (the server asked us to wait), ``failing`` or ``active``."""
        if self.disabled_at is not None:
            return "disabled"
        if self.throttled_until is not None:
            return "throttled"
        if self.error_count:
            return "failing"
        return "active"


@dataclass(frozen=True)
class ItemError:
    """One item of a source that could not become an article."""

    feed_id: int
    item_key: str
    code: str
    detail: str
    seen_at: datetime
