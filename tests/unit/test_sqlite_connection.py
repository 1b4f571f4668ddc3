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
