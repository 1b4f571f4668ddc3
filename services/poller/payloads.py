"""Extraction job arguments built by the poller (the worker validates them with ItemPayload)."""

from __future__ import annotations

from typing import Any

from services.sources.feed import FeedItem
from services.sources.folder import FolderEntry

PAYLOAD_VERSION = 1


def feed_payload(
    feed_id: int, item: FeedItem, *, page_html: str | None = None, page_url: str | None = None
) -> dict[str, Any]:
    """The extraction job argument for a feed item (JSON primitives only).

    ``page_html`` and ``page_url`` (the article page the poller fetched, decoded, and its
    URL after redirects) are optional keys of version 1: present only with a page.
    """
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "feed_id": feed_id,
        "kind": "feed",
        "item_key": item.item_key,
        "content_hash": item.content_hash,
        "url": item.url,
        "title": item.title,
        "summary": item.summary,
        "content": item.content,
        "content_type": item.content_type,
        "published": item.published.isoformat() if item.published else None,
        "author": item.author,
    }
    if page_html is not None:
        payload["page_html"] = page_html
        payload["page_url"] = page_url
    return payload


def file_payload(feed_id: int, entry: FolderEntry) -> dict[str, Any]:
    """The extraction job argument for a folder file; the file's text travels in the job."""
    return {
        "v": PAYLOAD_VERSION,
        "feed_id": feed_id,
        "kind": "file",
        "item_key": entry.item_key,
        "content_hash": entry.content_hash,
        "url": None,
        "title": None,
        "summary": None,
        "content": entry.text,
        "content_type": "text/plain",
        "published": None,
        "author": None,
    }
