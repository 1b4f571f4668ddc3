"""Filters on real articles: the pipeline stores the seed article, the dispatcher matches it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from services.config import Settings
from services.db import feeds
from services.db.engine import transaction
from services.db.models import Entity
from services.webhooks.filters import Candidate, Filters, matches, parse_filters
from tests.test_webhooks import FAST, Hooks, Receiver, now, receiver, verify  # noqa: F401
from tests.test_worker import SEED, enqueue, file_payload

MATCHING = {
    "feed": {"feeds": ["FEED"]},
    "entity-name": {"entities": ["Hamas"]},
    "entity-alias": {"entities": ["Antony J. Blinken"]},
    "entity-id": {"entities": ["GAZA_ID"]},
    "keyword-title": {"keywords": ["peace talks"]},
    "keyword-text": {"keywords": ["State Department"]},
    "language": {"languages": ["en"]},
    "all-of-them": {"feeds": ["FEED"], "entities": ["Hamas"], "keywords": ["truce"],
                    "languages": ["en"]},
}  # fmt: skip
NOT_MATCHING = {
    "other-feed": {"feeds": ["OTHER"]},
    "unknown-entity": {"entities": ["Nobody Atall"]},
    "keyword": {"keywords": ["bitcoin"]},
    "part-of-a-word": {"keywords": ["Gaz"]},
    "language": {"languages": ["fr"]},
    "one-of-several-fails": {"entities": ["Hamas"], "languages": ["de"]},
}


def _resolve(spec: dict[str, list[Any]], feed_id: int, gaza_id: int) -> dict[str, list[Any]]:
    swap = {"FEED": feed_id, "OTHER": feed_id + 1000, "GAZA_ID": gaza_id}
    return {k: [swap.get(v, v) for v in values] for k, values in spec.items()}


def test_filters_by_feed_entity_keyword_and_language(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    burst: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    hooks = Hooks(settings.with_overrides(**FAST), engine, redis_conn)
    try:
        with transaction(hooks.db) as s:
            feed_id = feeds.add_feed(s, url="folder:/seeds", kind="folder",
                                     interval_seconds=900, now=now()).id  # fmt: skip
        # Entities known before the article: ids can be given in a filter.
        with transaction(hooks.db) as s:
            s.add(Entity(type="place", key="gaza", name="Gaza", aliases=[]))
        with hooks.db() as s:
            gaza_id = s.scalar(select(Entity.id).where(Entity.key == "gaza"))
        assert gaza_id is not None
        subs = {}
        for group, specs in (("yes", MATCHING), ("no", NOT_MATCHING)):
            for name, spec in specs.items():
                filters = parse_filters(_resolve(spec, feed_id, gaza_id))
                subs[f"/{group}/{name}"] = hooks.subscribe(receiver.url(f"/{group}/{name}"),
                                                          filters=filters)  # fmt: skip
        assert enqueue(settings, file_payload(feed_id, SEED.name, SEED.read_text("utf-8")))
        assert burst() == 1
        hooks.pump(lambda: len(receiver.hits) >= len(MATCHING))
        hooks.tick()  # anything else due would arrive now
        assert sorted(h.path for h in receiver.hits) == sorted(f"/yes/{n}" for n in MATCHING)
        hit = receiver.on("/yes/feed")[0]
        document = verify(subs["/yes/feed"].secret, hit)
        article = document["data"]["article"]
        assert document["type"] == "article.created" and document["data"]["version"] == 1
        assert article["title"].startswith("Biden sends Blinken to Mideast to push peace talks")
        assert article["language"] == "en" and article["feed_ids"] == [feed_id]
        assert article["api_url"] == f"/v1/articles/{article['id']}"
        assert set(article) >= {"id", "title", "url", "canonical_url", "published_at",
                                "language", "summary", "story_id", "feed_ids"}  # fmt: skip
        names = {e["name"]: e for e in document["data"]["entities"]}
        assert names["Gaza"]["id"] == gaza_id and names["Hamas"]["type"] == "organization"
        assert len(hit.body) < 20_000
        assert len({h.webhook_id for h in receiver.hits}) == 1  # one event, many subscribers
    finally:
        hooks.close()


CASES = [
    (Filters(), Candidate("article.created"), True),
    (Filters(), Candidate("article.updated"), False),  # not subscribed to updates
    (Filters(feeds=(1,)), Candidate("feed.error", feed_ids=frozenset({1})), True),
    (Filters(feeds=(1,)), Candidate("feed.error", feed_ids=frozenset({2})), False),
    (Filters(feeds=(1,)), Candidate("article.created"), False),
    (Filters(keywords=("Fire",)), Candidate("article.created", text="a fire in Porto"), True),
    (Filters(keywords=("Fire",)), Candidate("article.created", text="firefighters"), False),
    (Filters(keywords=("x", "porto")), Candidate("article.created", text="Porto"), True),
    (Filters(languages=("en",)), Candidate("article.created", language=None), False),
    (Filters(keywords=("fire",)), Candidate("feed.error"), True),  # article filters: articles
]


@pytest.mark.parametrize(("filters", "event", "expected"), CASES)
def test_match_table(filters: Filters, event: Candidate, expected: bool) -> None:
    types = ("article.created", "feed.error")
    assert matches(filters, types, event) is expected


def test_filters_round_trip_as_json() -> None:
    spec = {"feeds": [3, 3], "entities": ["Gaza", 4], "keywords": [" truce "], "languages": ["EN"]}
    parsed = parse_filters(spec)
    assert parsed.as_json() == {"feeds": [3], "entities": ["Gaza", 4], "keywords": ["truce"],
                                "languages": ["en"]}  # fmt: skip
    assert parse_filters(json.loads(json.dumps(parsed.as_json()))) == parsed
