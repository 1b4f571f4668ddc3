"""``GET /metrics``: Prometheus text exposition of every role's counters and current gauges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.api.context import REDIS, SETTINGS, read
from services.db import stats
from services.metrics import KEY, render, sample

routes = web.RouteTableDef()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Counters from Redis (added by pollers, workers and delivery workers) and gauges read
    now from SQL and Redis; open like the health routes (no secret in it)."""
    client = request.app[REDIS]
    settings = request.app[SETTINGS]
    raw, queues, sql = await asyncio.gather(
        client.hgetall(KEY),
        _queue_gauges(client, [settings.extract_queue, settings.webhook_queue]),
        read(request, _sql_gauges),
    )
    counters = {_text(k): float(v) for k, v in raw.items()}
    gauges = [*queues, *sql, *_ratio(counters)]
    return web.Response(
        body=render(counters, gauges).encode("utf-8"), headers={"Content-Type": CONTENT_TYPE}
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sql_gauges(session: Session) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = [
        (sample("newsdesk_feeds", {"state": s}), n)
        for s, n in stats.feeds_by_state(session).items()
    ]
    counts = stats.row_counts(session)
    found += [("newsdesk_articles", counts["articles"]), ("newsdesk_entities", counts["entities"])]
    found += [
        (sample("newsdesk_deliveries", {"status": s}), n)
        for s, n in stats.deliveries_by_status(session).items()
    ]
    return found


async def _queue_gauges(client: Any, names: list[str]) -> list[tuple[str, float]]:
    """Depth, oldest waiting job's age and failed jobs of each rq queue (rq's own keys)."""
    found: list[tuple[str, float]] = []
    now = datetime.now(UTC)
    for name in names:
        labels = {"queue": name}
        depth = await client.llen(f"rq:queue:{name}")
        failed = await client.zcard(f"rq:failed:{name}")
        age = 0.0
        head = await client.lindex(f"rq:queue:{name}", 0)
        if head is not None:
            enqueued = await client.hget(f"rq:job:{_text(head)}", "enqueued_at")
            if enqueued:
                at = datetime.fromisoformat(_text(enqueued).replace("Z", "+00:00"))
                age = max(0.0, (now - at.astimezone(UTC)).total_seconds())
        found += [
            (sample("newsdesk_queue_depth", labels), depth),
            (sample("newsdesk_queue_oldest_age_seconds", labels), round(age, 3)),
            (sample("newsdesk_queue_failed", labels), failed),
        ]
    return found


def _ratio(counters: dict[str, float]) -> list[tuple[str, float]]:
    """304s among HTTP polls that reached the server (deferred polls never did)."""
    polls = {
        k.split('outcome="', 1)[1].split('"', 1)[0]: v
        for k, v in counters.items()
        if k.startswith("newsdesk_polls_total{") and 'kind="http"' in k
    }
    asked = sum(v for outcome, v in polls.items() if outcome != "deferred")
    if not asked:
        return []
    return [("newsdesk_poll_not_modified_ratio", round(polls.get("not_modified", 0) / asked, 4))]
