"""How newsdesk opens a SQLite database: every connection gets the same settings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from services.db.engine import SQLITE_CACHE_KIB, make_engine


def test_every_sqlite_connection_is_set_up_for_concurrent_durable_work(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    try:
        with engine.connect() as conn:
            setting = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in (
                    "journal_mode",
                    "synchronous",
                    "foreign_keys",
                    "busy_timeout",
                    "cache_size",
                    "temp_store",
                )
            }
    finally:
        engine.dispose()
    assert setting == {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL: in WAL mode a commit survives a crash of the process
        "foreign_keys": 1,
        "busy_timeout": 30_000,
        "cache_size": -SQLITE_CACHE_KIB,  # negative: KiB, not pages
        "temp_store": 2,  # MEMORY
    }


def test_a_storage_mark_moves_with_every_write_and_only_then(tmp_path: Path) -> None:
    """Two marks on one connection are equal only if nothing was written in between: by
    another connection (committed), or by this one (committed or not)."""
    from sqlalchemy.orm import Session

    from services.db.engine import storage_mark

    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    engine, other = make_engine(url), make_engine(url)
    try:
        with other.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.connect() as conn:

            def mark() -> object:
                with Session(bind=conn) as session:
                    found = storage_mark(session)
                    session.commit()
                    return found

            first = mark()
            assert first is not None
            assert mark() == first, "nothing written: the same mark"
            with other.begin() as writer:
                writer.execute(text("INSERT INTO t VALUES (1)"))
            second = mark()
            assert second != first, "another connection committed"
            conn.execute(text("INSERT INTO t VALUES (2)"))
            conn.commit()
            third = mark()
            assert third != second, "this connection wrote"
            conn.execute(text("INSERT INTO t VALUES (3)"))
            conn.rollback()
            assert mark() != third, "a write rolled back still counts"
    finally:
        engine.dispose()
        other.dispose()


def test_the_connection_used_last_is_handed_out_first(tmp_path: Path) -> None:
    """Consecutive units of work share one connection (and its page cache) even when the
    pool holds several."""
    engine = make_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    try:
        first, second = engine.connect(), engine.connect()
        used = [c.connection.dbapi_connection for c in (first, second)]
        assert used[0] is not used[1]
        first.close()
        second.close()  # returned last
        with engine.connect() as again:
            assert again.connection.dbapi_connection is used[1]
    finally:
        engine.dispose()
