"""The webhook body: ``{"type", "timestamp", "data"}`` built from a stored event. Pure.

The same envelope (plus ``id``) is what ``GET /v1/events`` lists, so a client can switch
between polling and webhooks without translating anything.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
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


class Bodies:
    """Webhook bodies by event id, the most recently used ``size`` kept.

    An event's body is the same for every subscription and every attempt, and stored events
    never change (ids are never reused), so a delivery process builds and encodes each one
    once however many subscribers it goes to.
    """

    def __init__(self, *, public_url: str = "", size: int = 1024) -> None:
        self._public_url = public_url
        self._size = size
        self._bodies: OrderedDict[int, bytes] = OrderedDict()

    def missing(self, event_ids: Iterable[int]) -> set[int]:
        """Those of ``event_ids`` whose body is not kept."""
        return {i for i in event_ids if i not in self._bodies}

    def add(self, event_id: int, type_: str, created_at: datetime, payload: dict[str, Any]) -> None:
        self._bodies[event_id] = body(type_, created_at, payload, public_url=self._public_url)
        self._bodies.move_to_end(event_id)
        while len(self._bodies) > self._size:
            self._bodies.popitem(last=False)

    def __getitem__(self, event_id: int) -> bytes:
        """The body of event ``event_id``; KeyError if it is not kept."""
        found = self._bodies[event_id]
        self._bodies.move_to_end(event_id)
        return found
