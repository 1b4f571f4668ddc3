"""Entity API over the alias table: aliases, daily counts, co-occurring entities, lookups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.core.entities import ArticleEntity as Found
from services.core.entities import entity_key
from services.db.engine import transaction
from services.db.entities import store_entities
from tests.test_entity_store import new_article

Client = TestClient[web.Request, web.Application]
Db = sessionmaker[Session]


def seen(name: str, type: str = "place") -> Found:
    return Found(name, type, entity_key(name), 1, 0, (name,))


def article(db: Db, title: str, when: datetime, *found: Found) -> tuple[int, dict[str, int]]:
    """Store an article mentioning ``found``; returns its id and entity ids by name."""
    article_id = new_article(db, title, when)
    with transaction(db) as s:
        stored = store_entities(s, article_id=article_id, found=list(found), now=when)
    return article_id, {e.name: e.id for e in stored}


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    body = await resp.json(content_type=None)
    assert resp.status == status, body
    return body


async def test_entity_detail_shows_aliases_counts_and_co_occurring(client: Client, db: Db) -> None:
    now = datetime.now(UTC)
    # Yesterday's articles at fixed hours, so they fall on yesterday at any time of day.
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    _, ids = article(db, "a", now, seen("U.S."), seen("Egypt"), seen("Hamas", "organization"))
    article(db, "b", yesterday, seen("America"), seen("Egypt"))
    article(db, "c", yesterday - timedelta(hours=1), seen("United States of America"))
    article(db, "d", now - timedelta(days=40), seen("United States"), seen("Qatar"))
    article(db, "e", now, seen("Egypt"), seen("Qatar"))
    us = ids["United States"]

    body = await get(client, f"/v1/entities/{us}")

    assert body["name"] == "United States" and body["article_count"] == 4
    assert body["aliases"] == ["America", "U.S.", "United States of America"]
    counts = body["counts"]
    assert len(counts) == 30 and counts[-1]["date"] == now.date().isoformat()
    assert counts[0]["date"] == (now - timedelta(days=29)).date().isoformat()
    assert [c["articles"] for c in counts[-2:]] == [2, 1]
    assert sum(c["articles"] for c in counts) == 3  # the 40-day-old article is outside
    assert [(c["name"], c["shared_articles"]) for c in body["co_occurring"]] == [
        ("Egypt", 2), ("Hamas", 1), ("Qatar", 1)
    ]  # fmt: skip
    assert set(body["co_occurring"][0]) == {"id", "name", "type", "shared_articles"}


async def test_co_occurring_keeps_the_top_ten(client: Client, db: Db) -> None:
    now = datetime.now(UTC)
    for i in range(12):
        others = [seen(f"Town {n:02d}") for n in range(i + 1)]
        _, ids = article(db, f"a{i}", now, seen("Egypt"), *others)

    body = await get(client, f"/v1/entities/{ids['Egypt']}")

    assert [c["name"] for c in body["co_occurring"]] == [f"Town {n:02d}" for n in range(10)]
    assert body["co_occurring"][0]["shared_articles"] == 12


@pytest.mark.parametrize("ref", ["America", "U.S.", "us", "United%20States", "USA", "the%20States"])
async def test_articles_by_any_name_of_an_entity(client: Client, db: Db, ref: str) -> None:
    now = datetime.now(UTC)
    a, _ = article(db, "a", now - timedelta(hours=2), seen("U.S."))
    b, _ = article(db, "b", now - timedelta(hours=1), seen("United States"))
    article(db, "c", now, seen("Egypt"))

    body = await get(client, f"/v1/articles?entity={ref}")

    assert [x["id"] for x in body["data"]] == [b, a]


async def test_articles_by_organisation_alias_or_id(client: Client, db: Db) -> None:
    now = datetime.now(UTC)
    a, ids = article(db, "a", now, seen("State Department", "organization"))
    b, _ = article(
        db, "b", now + timedelta(seconds=1), seen("U.S. State Department", "organization")
    )
    state = ids["State Department"]

    for ref in ["Department%20of%20State", "U.S.%20State%20Department", str(state)]:
        body = await get(client, f"/v1/articles?entity={ref}")
        assert [x["id"] for x in body["data"]] == [b, a], ref
    assert (await get(client, "/v1/articles?entity=Nowhere"))["data"] == []
