"""Stories over the HTTP API: an article's story and its other members, and one story."""

from __future__ import annotations

from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.syndication import LATIMES_MAY, item, later, payload, seed, wire
from tests.test_api import T0, add_article, add_feed, get_json
from workers.context import WorkerContext
from workers.pipeline import Outcome, process

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def stored(ctx: WorkerContext, db: sessionmaker[Session]) -> dict[str, Outcome]:
    """The seed, its AP copy, a follow-up (same story) and an unrelated LA Times article."""
    s = seed()
    texts = {
        "seed": s,
        "copy": wire(s),
        "follow-up": later(s),
        "concerts": replace(item(LATIMES_MAY, "concerts-reopening"), key="concerts"),
    }
    return {
        name: process(ctx, payload(add_feed(db, f"https://{name}.test/rss"), text))
        for name, text in texts.items()
    }


async def test_article_detail_has_its_story(client: Client, stored: dict[str, Outcome]) -> None:
    seed_id, follow_id = stored["seed"].article_id, stored["follow-up"].article_id
    assert stored["copy"].article_id == seed_id

    body = await get_json(client, f"/v1/articles/{seed_id}")

    assert body["story"] == {"id": stored["seed"].story_id, "article_count": 2}
    assert body["story_id"] == stored["seed"].story_id
    assert body["story_articles"] == [
        {"id": follow_id, "title": "Blinken arrives in Israel as Gaza truce holds"}
    ]
    assert len(body["sources"]) == 2
    follow = await get_json(client, f"/v1/articles/{follow_id}")
    assert follow["story_articles"] == [{"id": seed_id, "title": seed().title}]
    alone = await get_json(client, f"/v1/articles/{stored['concerts'].article_id}")
    assert alone["story"]["article_count"] == 1 and alone["story_articles"] == []


async def test_article_from_before_stories_has_none(
    client: Client, db: sessionmaker[Session]
) -> None:
    article = add_article(db, "old", T0, urls=["https://x.test/old"])
    body = await get_json(client, f"/v1/articles/{article}")
    assert (body["story"], body["story_articles"], body["story_id"]) == (None, [], None)


async def test_story_lists_its_articles_newest_first(
    client: Client, stored: dict[str, Outcome]
) -> None:
    story_id = stored["seed"].story_id
    ids = [stored["follow-up"].article_id, stored["seed"].article_id]

    body = await get_json(client, f"/v1/stories/{story_id}")

    assert body["id"] == story_id and body["article_count"] == 2
    assert body["first_article_id"] == stored["seed"].article_id
    assert [a["id"] for a in body["articles"]] == ids
    assert body["articles"][1]["title"] == seed().title
    assert body["articles"][1]["url"] == seed().url
    assert body["next_cursor"] is None and body["created_at"].endswith("Z")

    first = await get_json(client, f"/v1/stories/{story_id}?limit=1")
    assert [a["id"] for a in first["articles"]] == ids[:1] and first["next_cursor"]
    rest = await get_json(client, f"/v1/stories/{story_id}?limit=1&cursor={first['next_cursor']}")
    assert [a["id"] for a in rest["articles"]] == ids[1:] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/stories/999999", 404, "not_found"),
        ("/v1/stories/abc", 400, "invalid"),
        ("/v1/stories/1?sort=asc", 400, "unknown_parameter"),
        ("/v1/stories/1?cursor=nonsense", 400, "invalid"),
    ],
)
async def test_story_errors_are_problems(
    client: Client, stored: dict[str, Outcome], path: str, status: int, code: str
) -> None:
    body = await get_json(client, path, status)
    assert body["type"] == f"urn:newsdesk:problem:{code}"
