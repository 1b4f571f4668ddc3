"""Dialect-specific ``INSERT ... ON CONFLICT`` statements, behind one portable helper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any) -> Any:
    """An ``insert(table)`` of the session's dialect, which has ``on_conflict_*`` methods."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {name!r}")


def insert_ignore(
    session: Session, table: Any, values: dict[str, Any], returning: Sequence[Any] = ()
) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING [RETURNING ...]``; returns the row or None.

    Only the writer that actually inserted gets a row back, which is what makes event
    writes exactly-once under concurrency.
    """
    stmt: Insert = insert_for(session, table).values(**values).on_conflict_do_nothing()
    if returning:
        return session.execute(stmt.returning(*returning)).first()
    session.execute(stmt)
    return None
