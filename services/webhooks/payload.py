"""The webhook body: ``{"type", "timestamp", "data"}`` built from a stored event. Pure.

The same envelope (plus ``id``) is what ``GET /v1/events`` lists, so a client can switch
between polling and webhooks without translating anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

PING_TYPE = "webhook.ping"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_data(type_: str, payload: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
    """The event's ``data``, with the API path (or URL) of the article it is about."""
    data = dict(payload)
    article = data.get("article")
    if type_.startswith("article.") and isinstance(article, dict) and "id" in article:
        data["article"] = article | {"api_url": f"{public_url}/v1/articles/{article['id']}"}
    return data


def envelope(
    type_: str, created_at: datetime, payload: dict[str, Any], *, public_url: str = ""
) -> dict[str, Any]:
    return {
        "type": type_,
        "timestamp": iso(created_at),
        "data": event_data(type_, payload, public_url=public_url),
    }


def body(
    type_: str, created_at: datetime, payload: dict[str, Any], *, public_url: str = ""
) -> bytes:
    """The exact bytes that are signed and POSTed (compact JSON, UTF-8)."""
    document = envelope(type_, created_at, payload, public_url=public_url)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def ping_body(subscription_id: int, now: datetime) -> bytes:
    document = {
        "type": PING_TYPE,
        "timestamp": iso(now),
        "data": {"subscription_id": subscription_id},
    }
    return json.dumps(document, separators=(",", ":")).encode()
