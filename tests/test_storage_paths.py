"""Storage details of the extraction path: read-only units and the candidates' shingle cache."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.db.bands import ShingleCache
from services.db.engine import make_engine, reading, session_factory, transaction
from services.db.models import Article


def test_shingle_cache_is_lru_and_misses_on_a_changed_text() -> None:
    cache = ShingleCache(2)
    a, b, c = frozenset({1}), frozenset({2}), frozenset({3})
    cache.put(1, "h1", a)
    cache.put(2, "h2", b)
    assert cache.get(1, "h1") == a  # 1 is now the most recently used
    cache.put(3, "h3", c)  # evicts 2
    assert cache.get(2, "h2") is None
    assert (cache.get(1, "h1"), cache.get(3, "h3")) == (a, c)
    assert cache.get(1, "other-hash") is None  # the article's text changed


def test_reading_takes_no_write_lock_on_sqlite(
    database_url: str, engine: Engine, db: sessionmaker[Session]
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL reads never take a write lock")
    writer_engine = make_engine(database_url, immediate=True)
    writers = session_factory(writer_engine)
    held, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with transaction(writers) as session:
            session.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is held
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    try:
        assert held.wait(10)
        # A reading unit on a writer's engine answers while another writer holds the lock
        # (with BEGIN IMMEDIATE it would wait out the 30 s busy timeout).
        with reading(writers) as session:
            assert session.scalar(select(Article.id).limit(1)) is None
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(10)
        writer_engine.dispose()
