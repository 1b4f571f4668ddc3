"""Story handler: one story (near-duplicate cluster) with its articles, newest first."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import params
from services.api.context import read
from services.api.schemas import iso, link_header, next_url
from services.db import stories

routes = web.RouteTableDef()


@routes.get("/v1/stories/{id}")
async def get_story(request: web.Request) -> web.Response:
    """``limit`` and ``cursor`` page through the articles (keyset on sort time, id)."""
    query = request.query
    params.check_query(request, {"limit", "cursor"})
    story_id = params.parse_id(request.match_info["id"])
    limit = params.limit(query)
    cursor = params.article_cursor(query)
    story = await read(
        request, lambda s: stories.get_story(s, story_id, limit=limit, cursor=cursor)
    )
    last = story.articles[-1] if story.more else None
    next_cursor = params.encode_article_cursor(last.sort_at, last.id) if last else None
    url = next_url(request, cursor=next_cursor) if next_cursor else None
    return web.json_response(story_json(story, next_cursor, url), headers=link_header(url))


def story_json(
    story: stories.StoryDetail, next_cursor: str | None, next_page: str | None = None
) -> dict[str, Any]:
    return {
        "id": story.id,
        "article_count": story.article_count,
        "first_article_id": story.first_article_id,
        "created_at": iso(story.created_at),
        "updated_at": iso(story.updated_at),
        "articles": [
            {
                "id": a.id,
                "title": a.title,
                "url": a.url,
                "published_at": iso(a.published_at),
                "summary": a.summary,
            }
            for a in story.articles
        ],
        "next_cursor": next_cursor,
        "next": next_page,
    }
