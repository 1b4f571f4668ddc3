"""Webhook handlers: subscriptions, their deliveries, redelivery, test pings, the events cursor."""

from __future__ import annotations

import secrets as stdlib_secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.api import params
from services.api.context import SETTINGS, read, write
from services.api.errors import Unprocessable
from services.api.schemas import iso, link_header, next_url, page, parse_json_body
from services.core.errors import InvalidInput
from services.core.netpolicy import parse_allowlist
from services.db import deliveries, events, subscriptions
from services.db.subscriptions import SubscriptionRecord
from services.webhooks import signing
from services.webhooks.filters import EVENT_TYPES, Filters, parse_event_types, parse_filters
from services.webhooks.payload import envelope, ping_body
from services.webhooks.sender import Sender, check_destination

routes = web.RouteTableDef()

FIELDS = frozenset({"url", "description", "event_types", "filters", "enabled"})
MAX_DESCRIPTION = 1000
STATUSES = ("pending", "delivering", "failed", "succeeded", "dead")
MAX_EVENTS_PAGE = 1000


@dataclass(frozen=True)
class SubscriptionInput:
    url: str | None = None
    description: str | None = None
    event_types: tuple[str, ...] | None = None
    filters: Filters | None = None
    enabled: bool | None = None


def _body(data: Any, *, creating: bool) -> tuple[SubscriptionInput, set[str]]:
    """Validate a create or PATCH body; every failure a 422 naming the field."""
    if not isinstance(data, dict):
        raise Unprocessable("request body must be a JSON object", param="body")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise Unprocessable(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}",
            param=", ".join(unknown),
        )
    if creating and "url" not in data:
        raise Unprocessable("url is required", param="url")
    description = data.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise Unprocessable(
            f"description must be a string of at most {MAX_DESCRIPTION} characters",
            param="description",
        )
    enabled = data.get("enabled")
    if "enabled" in data and not isinstance(enabled, bool):
        raise Unprocessable("enabled must be true or false", param="enabled")
    try:
        event_types = parse_event_types(data.get("event_types")) if "event_types" in data else None
        filters = parse_filters(data.get("filters")) if "filters" in data else None
    except InvalidInput as exc:
        raise Unprocessable(str(exc), param=exc.param, code=exc.code) from None
    return SubscriptionInput(
        url=None,
        description=description.strip() or None if isinstance(description, str) else None,
        event_types=event_types,
        filters=filters,
        enabled=enabled,
    ), set(data)


async def _destination(request: web.Request, url: Any) -> str:
    """The URL if the SSRF policy lets webhooks reach it, else a 422 saying why."""
    allow = parse_allowlist(request.app[SETTINGS].fetch_allow)
    try:
        return await check_destination(url, allow)
    except InvalidInput as exc:
        raise Unprocessable(str(exc), param="url", code=exc.code) from None


def subscription_json(s: SubscriptionRecord) -> dict[str, Any]:
    return {
        "id": s.id,
        "url": s.url,
        "description": s.description,
        "event_types": list(s.event_types),
        "filters": s.filters.as_json(),
        "enabled": s.enabled,
        "disabled_reason": s.disabled_reason,
        "disabled_at": iso(s.disabled_at),
        "failing_since": iso(s.failing_since),
        "rotating_until": iso(s.rotating_until),
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def delivery_json(d: deliveries.DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "subscription_id": d.subscription_id,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status in ("pending", "failed") else None,
        "last_attempt_at": iso(d.last_attempt_at),
        "response_code": d.last_status_code,
        "latency_ms": d.last_latency_ms,
        "error_code": d.last_error_code,
        "error_detail": d.last_error_detail,
        "response_excerpt": d.response_excerpt,
        "delivered_at": iso(d.delivered_at),
        "created_at": iso(d.created_at),
    }


def _sub_id(request: web.Request) -> int:
    return params.parse_id(request.match_info["id"])


@routes.post("/v1/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    """Register a webhook endpoint; the response holds its secret, shown this once."""
    params.check_query(request, ())
    data = parse_json_body(await request.read())
    given, _ = _body(data, creating=True)
    url = await _destination(request, data["url"])
    secret = signing.new_secret()
    now = datetime.now(UTC)
    record = await write(
        request,
        lambda s: subscriptions.create_subscription(
            s, url=url, description=given.description,
            event_types=given.event_types or parse_event_types(None),
            filters=given.filters or Filters(), secret=secret, now=now,
            enabled=True if given.enabled is None else given.enabled,
        ),
    )  # fmt: skip
    return web.json_response(
        subscription_json(record) | {"secret": secret},
        status=201,
        headers={"Location": f"/v1/subscriptions/{record.id}"},
    )


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    query = request.query
    params.check_query(request, {"limit", "cursor"})
    limit = params.limit(query)
    after = _after_cursor(query, "subscriptions")
    found = await read(
        request, lambda s: subscriptions.list_subscriptions(s, after_id=after, limit=limit + 1)
    )
    items = found[:limit]
    cursor = params.encode_cursor("subscriptions", items[-1].id) if len(found) > limit else None
    return page(request, [subscription_json(s) for s in items], cursor)


def _after_cursor(query: Any, kind: str) -> int:
    raw = query.get("cursor")
    if raw is None:
        return 0
    values = params._decode_cursor(query, kind, 1)
    return 0 if values is None else params._cursor_int(values[0])


@routes.get("/v1/subscriptions/{id}")
async def get_subscription(request: web.Request) -> web.Response:
    params.check_query(request, ())
    sub_id = _sub_id(request)
    record = await read(request, lambda s: subscriptions.get_subscription(s, sub_id))
    return web.json_response(subscription_json(record))


@routes.patch("/v1/subscriptions/{id}")
async def patch_subscription(request: web.Request) -> web.Response:
    """Change ``url``, ``description``, ``event_types``, ``filters`` or ``enabled``."""
    params.check_query(request, ())
    sub_id = _sub_id(request)
    data = parse_json_body(await request.read())
    given, present = _body(data, creating=False)
    changes: dict[str, Any] = {}
    if "url" in present:
        changes["url"] = await _destination(request, data["url"])
    if "description" in present:
        changes["description"] = given.description
    if given.event_types is not None:
        changes["event_types"] = given.event_types
    if given.filters is not None:
        changes["filters"] = given.filters
    if given.enabled is not None:
        changes["enabled"] = given.enabled
    now = datetime.now(UTC)
    record = await write(
        request, lambda s: subscriptions.update_subscription(s, sub_id, now=now, **changes)
    )
    return web.json_response(subscription_json(record))


@routes.delete("/v1/subscriptions/{id}")
async def delete_subscription(request: web.Request) -> web.Response:
    """Forget a subscription and its deliveries."""
    params.check_query(request, ())
    sub_id = _sub_id(request)
    await write(request, lambda s: subscriptions.delete_subscription(s, sub_id))
    return web.Response(status=204)


@routes.post("/v1/subscriptions/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown this once; the old one also signs until ``rotating_until``."""
    params.check_query(request, ())
    sub_id = _sub_id(request)
    secret = signing.new_secret()
    now = datetime.now(UTC)
    grace = request.app[SETTINGS].webhook_rotation_grace
    record = await write(
        request,
        lambda s: subscriptions.rotate_secret(s, sub_id, secret=secret, now=now, grace=grace),
    )
    return web.json_response(subscription_json(record) | {"secret": secret})


@routes.post("/v1/subscriptions/{id}/test")
async def test_subscription(request: web.Request) -> web.Response:
    """POST a signed ``webhook.ping`` now and report what the endpoint answered."""
    params.check_query(request, ())
    sub_id = _sub_id(request)
    record = await read(request, lambda s: subscriptions.get_subscription(s, sub_id))
    now = datetime.now(UTC)
    msg_id = "ping_" + stdlib_secrets.token_hex(12)
    async with Sender(request.app[SETTINGS]) as sender:
        result = await sender.send(
            record.url, msg_id=msg_id, body=ping_body(sub_id, now),
            secrets=record.signing_secrets(now), now=now,
        )  # fmt: skip
    return web.json_response(
        {
            "webhook_id": msg_id,
            "ok": result.ok,
            "response_code": result.status_code,
            "latency_ms": result.latency_ms,
            "error_code": result.error_code,
            "error_detail": result.error_detail,
            "response_excerpt": result.excerpt,
        }
    )


@routes.get("/v1/subscriptions/{id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    """A subscription's deliveries, newest first; ``status`` filters."""
    query = request.query
    params.check_query(request, {"limit", "cursor", "status"})
    sub_id = _sub_id(request)
    limit = params.limit(query)
    status = params.single(query, "status")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", param="status")
    before = _after_cursor(query, "deliveries") or None
    found = await read(
        request,
        lambda s: deliveries.list_deliveries(
            s, subscription_id=sub_id, before_id=before, limit=limit + 1, status=status
        ),
    )
    items = found[:limit]
    cursor = params.encode_cursor("deliveries", items[-1].id) if len(found) > limit else None
    return page(request, [delivery_json(d) for d in items], cursor)


@routes.get("/v1/deliveries/{id}")
async def get_delivery(request: web.Request) -> web.Response:
    """One delivery with every attempt."""
    params.check_query(request, ())
    delivery_id = params.parse_id(request.match_info["id"])
    found, attempts = await read(request, lambda s: deliveries.get_delivery(s, delivery_id))
    return web.json_response(
        delivery_json(found)
        | {
            "attempt_log": [
                {
                    "attempted_at": iso(a.attempted_at),
                    "response_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "error_code": a.error_code,
                    "error_detail": a.error_detail,
                    "response_excerpt": a.response_excerpt,
                }
                for a in attempts
            ]
        }
    )


@routes.post("/v1/deliveries/{id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    """Send again, now, with a fresh retry schedule (same ``webhook-id``); 202."""
    params.check_query(request, ())
    delivery_id = params.parse_id(request.match_info["id"])
    now = datetime.now(UTC)
    found = await write(request, lambda s: deliveries.redeliver(s, delivery_id, now=now))
    return web.json_response(delivery_json(found), status=202)


@routes.get("/v1/events")
async def list_events(request: web.Request) -> web.Response:
    """Events with an id above ``after`` (default 0), oldest first: a gap-free cursor.

    Pass the response's ``next_after`` as ``after`` to continue; an empty ``data`` means
    caught up (``next_after`` then repeats ``after``).
    """
    query = request.query
    params.check_query(request, {"after", "limit", "type"}, repeatable={"type"})
    raw_after = params.single(query, "after")
    after = 0 if raw_after in (None, "0") else params.parse_id(raw_after or "", param="after")
    limit = params.limit(query, most=MAX_EVENTS_PAGE)
    types = query.getall("type", [])
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPES)}", param="type")
    found = await read(request, lambda s: events.events_after(s, after=after, limit=limit))
    public_url = request.app[SETTINGS].public_url
    # The type filter applies after the page is read, so next_after always moves past it.
    data = [
        {"id": e.id} | envelope(e.type, e.created_at, e.payload, public_url=public_url)
        for e in found
        if not types or e.type in types
    ]
    next_after = found[-1].id if found else after
    url = next_url(request, after=str(next_after))
    return web.json_response(
        {"data": data, "next_after": next_after, "next": url}, headers=link_header(url)
    )
