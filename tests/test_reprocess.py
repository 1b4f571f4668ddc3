"""`newsdesk reprocess`: stored articles go back through entity extraction via the queue."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.cli import main
from services.config import Settings
from services.db.engine import transaction
from services.db.models import (
    Article,
    ArticleBand,
    ArticleEntity,
    ArticleSource,
    ArticleUrl,
    Entity,
    Sighting,
    Story,
)
from tests.syndication import payload, seed, wire
from tests.test_worker import SEED, _feed, enqueue, file_payload
from workers.context import WorkerContext
from workers.pipeline import process
from workers.reprocess import reprocess


def _mentions(db: sessionmaker[Session]) -> dict[str, int]:
    with db() as s:
        rows = s.execute(
            select(Entity.name, Entity.article_count).join(
                ArticleEntity, ArticleEntity.entity_id == Entity.id
            )
        )
        return dict(rows.all())


def test_reprocess_restores_entities_and_is_idempotent(
    settings: Settings, db: sessionmaker[Session], burst: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    fid = _feed(db, "folder:/seeds", "folder")
    enqueue(settings, file_payload(fid, SEED.name, SEED.read_text("utf-8")))
    burst()
    expected = _mentions(db)
    assert expected["Antony J. Blinken"] == 1
    # Lose the article's entities (as if stored by an older version that found none).
    with transaction(db) as s:
        s.execute(delete(ArticleEntity))
        s.execute(Entity.__table__.update().values(article_count=0))
    assert _mentions(db) == {}
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    for _ in range(2):  # twice: the second run changes nothing
        assert main(["reprocess"]) == 0
        assert "queued 1 of 1 articles" in capsys.readouterr().err
        assert burst() == 1
        assert _mentions(db) == expected
    with db() as s:
        assert s.scalar(select(func.max(Entity.article_count))) == 1
    assert main(["reprocess", "--feed", str(fid + 1)]) == 0
    assert "queued 0 of 0 articles" in capsys.readouterr().err


# -- extraction and dedup ------------------------------------------------------------------


def _article(db: sessionmaker[Session], article_id: int) -> Article | None:
    with db() as s:
        return s.get(Article, article_id)


def test_reprocess_reextracts_from_the_kept_source(ctx: WorkerContext, db: Any) -> None:
    fid = _feed(db, "https://a.test/rss", "feed")
    first = process(ctx, payload(fid, seed()))
    assert first.status == "created" and first.article_id is not None
    aid = first.article_id
    clean = _article(db, aid)
    assert clean is not None
    # As an older extractor would have stored it: a caption and credit left in the body.
    with transaction(db) as s:
        s.execute(
            update(Article)
            .where(Article.id == aid)
            .values(
                title="OLD HEADLINE", text=clean.text + "\n\nPhoto: Pool Photo via AP",
                content_hash="0" * 64,
            )
        )  # fmt: skip
    result = reprocess(ctx, aid)
    assert result["status"] == "reprocessed"
    assert {"title", "text", "content_hash"} <= set(result["changed"])
    again = _article(db, aid)
    assert again is not None
    assert (again.title, again.text, again.content_hash) == (
        clean.title, clean.text, clean.content_hash,
    )  # fmt: skip
    assert reprocess(ctx, aid)["changed"] == []  # idempotent


def test_reprocess_without_a_source_reanalyses_the_stored_text(ctx: WorkerContext, db: Any) -> None:
    fid = _feed(db, "https://a.test/rss", "feed")
    aid = process(ctx, payload(fid, seed())).article_id
    assert aid is not None
    with transaction(db) as s:
        s.execute(delete(ArticleSource))
        s.execute(delete(ArticleEntity))
        s.execute(Entity.__table__.update().values(article_count=0))
    result = reprocess(ctx, aid)
    assert result["status"] == "reprocessed" and result["changed"] == []
    assert _mentions(db)["Antony J. Blinken"] == 1


@pytest.mark.parametrize("order", ["older_first", "newer_first"])
async def test_reprocess_merges_a_copy_an_older_version_kept_apart(
    ctx: WorkerContext, db: Any, client: Any, order: str
) -> None:
    s = seed()
    a, b = _feed(db, "https://a.test/rss", "feed"), _feed(db, "https://b.test/rss", "feed")
    older = process(ctx, payload(a, s)).article_id
    assert older is not None
    # An older dedup missed the wire copy: hide the original's index while the copy arrives.
    with transaction(db) as session:
        session.execute(delete(ArticleBand))
    copy = process(ctx, payload(b, wire(s)))
    assert copy.status == "created" and copy.article_id is not None
    newer = copy.article_id
    ids = [older, newer] if order == "older_first" else [newer, older]
    first = {i: reprocess(ctx, i) for i in ids}
    # Whichever runs second sees the other indexed: the newer is merged into the older.
    if order == "older_first":
        assert first[older]["absorbed"] == [newer]
    else:
        assert first[newer]["status"] == "reprocessed"  # the older had no index yet
        assert first[older]["absorbed"] == [newer]
    again = {i: reprocess(ctx, i) for i in ids}  # the second pass changes nothing
    assert again[newer] == {"status": "merged", "article_id": newer, "into": older}
    assert again[older]["status"] == "reprocessed" and again[older]["changed"] == []
    with db() as session:
        assert list(session.scalars(select(Article.id))) == [older]
        assert sorted(session.scalars(select(Sighting.article_id))) == [older, older]
        assert {wire(s).url, s.url} <= set(
            session.scalars(select(ArticleUrl.url).where(ArticleUrl.article_id == older))
        )
        # Every entity counts the one remaining article once.
        assert set(session.scalars(select(Entity.article_count))) <= {0, 1}
        assert session.scalar(select(func.max(Entity.article_count))) == 1
        (story,) = session.scalars(select(Story).where(Story.article_count > 0)).all()
        assert (story.article_count, story.first_article_id) == (1, older)
    resp = await client.get(f"/v1/articles/{newer}", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == f"/v1/articles/{older}"
    assert (await client.get(f"/v1/articles/{older}")).status == 200
    assert (await client.get(f"/v1/articles/{newer + 100}", allow_redirects=False)).status == 404
