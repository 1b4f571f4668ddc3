"""`newsdesk reprocess`: stored articles go back through entity extraction via the queue."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.cli import main
from services.config import Settings
from services.db.engine import transaction
from services.db.models import ArticleEntity, Entity
from tests.test_worker import SEED, _feed, enqueue, file_payload


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
