"""Dialect-specific ``INSERT ... ON CONFLICT`` statements, behind portable helpers.

Hot write paths use :class:`Prepared` statements: built once per dialect, then executed with
bound parameters on the session's connection. Building a statement per call (coercing every
value, assembling its ON CONFLICT clause) and running it through the ORM layer cost several
times what SQLite takes to execute it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

InsertFactory = Callable[[Any], Any]


def _insert_of(name: str) -> InsertFactory:
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"unsupported database dialect {name!r}")


def insert_for(session: Session, table: Any) -> Any:
    """An ``insert(table)`` of the session's dialect, which has ``on_conflict_*`` methods."""
    return _insert_of(session.get_bind().dialect.name)(table)


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


def ids_by_key(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> dict[Any, int]:
    """Run a multi-row ``INSERT ... RETURNING id, <key>`` and map each key to its new id
    (a key of several columns as a tuple); a row ``ON CONFLICT DO NOTHING`` skipped is absent.

    The key, unique among ``rows``, ties each id to its row, so RETURNING needs no order.
    Asked for one (``sort_by_parameter_order``), SQLAlchemy inserts row by row on SQLite,
    which cannot tie new rowids to parameter sets: one statement per row instead of one.
    """
    return {
        (row[1] if len(row) == 2 else tuple(row[1:])): int(row[0])
        for row in conn.execute(stmt, rows)
    }


def core(session: Session) -> Connection:
    """The session's connection (its transaction), for Core statements on hot paths."""
    return session.connection()


class Prepared:
    """A statement that needs the dialect's ``insert`` (for ``ON CONFLICT``), built on first
    use for each dialect and reused; execute it with parameters::

        _UPSERT = Prepared(lambda insert: insert(table).on_conflict_do_nothing())
        conn.execute(_UPSERT.on(conn), {"a": 1})
    """

    def __init__(self, build: Callable[[InsertFactory], Any]) -> None:
        self._build = build
        self._built: dict[str, Any] = {}

    def on(self, conn: Connection) -> Any:
        name = conn.dialect.name
        stmt = self._built.get(name)
        if stmt is None:
            stmt = self._built[name] = self._build(_insert_of(name))
        return stmt
