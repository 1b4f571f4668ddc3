"""Engines and transactions for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Transaction, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_MS = 30_000
# Page cache per SQLite connection, in KiB (SQLite's default is 2 MB). The near-duplicate
# index is probed at 64 random (band, value) keys per text: with the default cache most
# probes missed and read the page again from the file. Memory is taken only as pages are
# read (a worker keeps one connection open; the API up to its pool size).
SQLITE_CACHE_KIB = 32_768
READ_ONLY = "newsdesk_read_only"  # connection execution option set by `reading`


def make_engine(
    url: str, *, immediate: bool = True, pool_size: int = 5, role: str | None = None
) -> Engine:
    """Create an engine for ``url``.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        immediate: on SQLite, open write transactions with ``BEGIN IMMEDIATE`` so that two
            writers queue on the busy timeout instead of failing to upgrade a read lock.
            Read-only users (the API) pass False.
        pool_size: connections kept open (PostgreSQL).
        role: the process's role; on PostgreSQL its connections are named after it
            (``application_name`` ``newsdesk-<role>``, as ``pg_stat_activity`` and the server's
            log show them), unless ``url`` names them itself.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        named = role is not None and "application_name" not in parsed.query
        return create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, future=True,
            connect_args={"application_name": application_name(role)} if named else {},
        )  # fmt: skip
    options: dict[str, Any] = {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A pool of file connections hands out the most recently used first (last in, first
        # out): consecutive units of work then run on one connection, with its page cache
        # warm, and a mark taken in one (storage_mark) can be compared in the next. An
        # in-memory database has one connection per thread anyway.
        options["pool_use_lifo"] = True
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000}, **options)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.execute("PRAGMA temp_store=MEMORY")  # GROUP BY and sort scratch stays off disk
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A reading unit (see `reading`) takes no write lock: it never queues behind writers.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else begin)

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def application_name(role: str | None) -> str:
    """The PostgreSQL ``application_name`` of a role's connections."""
    return f"newsdesk-{role}"[:63] if role else "newsdesk"


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit that only reads: on SQLite a deferred ``BEGIN`` even on a writer's engine, so
    lookups take no write lock (PostgreSQL reads never lock). An error rolls it back."""
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        yield session
        # Ended with a commit: a rollback would make psycopg drop the statements it prepared
        # in the transaction, so PostgreSQL would parse and plan them again next time.
        session.commit()


@dataclass(frozen=True)
class StorageMark:
    """What one SQLite connection has seen of the database (see :func:`storage_mark`)."""

    connection: Any  # the DB-API connection, compared by identity
    data_version: int  # PRAGMA data_version: moves when another connection commits
    own_changes: int  # rows this connection has written, committed or not


def storage_mark(session: Session) -> StorageMark | None:
    """A mark of the database as the session's open transaction sees it, on SQLite; None on
    PostgreSQL, whose statements each take their own snapshot.

    Two marks taken on the same connection are equal only if nothing was written in between:
    ``PRAGMA data_version`` moves when any other connection (of any process) commits, and is
    read as of the start of the transaction it runs in; the connection's own writes, which
    it does not count, move ``total_changes``. Anything read in the first transaction then
    reads the same in the second.
    """
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return None
    dbapi: Any = conn.connection.dbapi_connection
    version = conn.exec_driver_sql("PRAGMA data_version").scalar_one()
    return StorageMark(dbapi, int(version), int(dbapi.total_changes))


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


# The advisory locks each open PostgreSQL transaction holds: taken once per transaction.
_HELD: weakref.WeakKeyDictionary[Transaction, set[int]] = weakref.WeakKeyDictionary()


def advisory_lock(session: Session, key: int) -> None:
    """Serialise the holders of ``key`` until this transaction ends: a transaction-scoped
    advisory lock on PostgreSQL (asked for once per transaction, however often this is
    called). SQLite needs nothing: ``BEGIN IMMEDIATE`` already makes writers take turns."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return
    transaction = conn.get_transaction()
    held = _HELD.setdefault(transaction, set()) if transaction is not None else set()
    if key not in held:
        conn.execute(_ADVISORY_LOCK, {"key": key})
        held.add(key)
