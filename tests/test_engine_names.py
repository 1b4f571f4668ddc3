"""On PostgreSQL each role's connections carry its name, so ``pg_stat_activity``, the server's
log and the extraction bench can tell them apart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from services.db.engine import application_name, make_engine
from tests.benches import load

ON_POSTGRES = pytest.mark.skipif(
    "postgresql" not in os.environ.get("NEWSDESK_TEST_DATABASE_URL", ""),
    reason="PostgreSQL connections",
)


@contextmanager
def _engine(url: str, role: str) -> Iterator[Engine]:
    """An engine of ``role`` on ``url`` for one test, disposed at its end."""
    named = make_engine(url, pool_size=1, role=role)
    try:
        yield named
    finally:
        named.dispose()


def _own_name(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(text("SELECT current_setting('application_name')")))


def test_a_roles_connections_are_named_after_it() -> None:
    assert application_name("worker") == "newsdesk-worker"
    assert application_name(None) == "newsdesk"
    assert len(application_name("x" * 100)) == 63  # PostgreSQL keeps 63 bytes


@ON_POSTGRES
def test_postgresql_sees_the_roles_name(database_url: str, engine: Engine) -> None:
    with _engine(database_url, "worker") as named:
        assert _own_name(named) == "newsdesk-worker"


@ON_POSTGRES
def test_a_name_in_the_url_wins(database_url: str, engine: Engine) -> None:
    url = make_url(database_url).update_query_dict({"application_name": "ops-console"})
    with _engine(url.render_as_string(hide_password=False), "worker") as named:
        assert _own_name(named) == "ops-console"


@ON_POSTGRES
def test_the_bench_reads_the_cpu_of_a_roles_backends(database_url: str, engine: Engine) -> None:
    module = load("extract")
    with _engine(database_url, "bench-probe") as named, named.connect() as conn:
        pid = int(conn.scalar(text("SELECT pg_backend_pid()")))
        conn.execute(text("SELECT count(*) FROM generate_series(1, 200000)")).all()
        found = module.backends_cpu(engine, application_name("bench-probe"))
        assert found is not None and set(found) == {pid}, found
        assert found[pid] >= 0.0
    assert module.backends_cpu(engine, application_name("nobody")) == {}


def test_the_bench_reads_no_backends_on_sqlite(tmp_path: object) -> None:
    module = load("extract")
    with _engine(f"sqlite:///{tmp_path}/x.sqlite3", "worker") as sqlite:
        assert module.backends_cpu(sqlite, application_name("worker")) is None
