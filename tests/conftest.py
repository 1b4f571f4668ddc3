"""Shared fixtures: real SQL (SQLite or PostgreSQL) and real Redis, cleaned for every test.

``NEWSDESK_TEST_DATABASE_URL`` and ``NEWSDESK_TEST_REDIS_URL`` select real servers; without
them the tests use a SQLite file and an embedded ``redis-server`` started for the session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db.engine import make_engine, session_factory
from services.db.migrate import upgrade
from services.db.models import Base
from services.embedded_redis import EmbeddedRedis
from services.metrics import Recorder

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("NEWSDESK_TEST_REDIS_URL", "").strip()
    if configured:
        yield configured
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False) as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    configured = os.environ.get("NEWSDESK_TEST_DATABASE_URL", "").strip()
    if configured:
        return configured
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The test database, migrated from scratch once per session by the real migrations."""
    eng = make_engine(database_url)
    _vacuum_catalogs(eng)
    with eng.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    upgrade(eng)
    yield eng
    eng.dispose()


# PostgreSQL catalogs each TRUNCATE rewrites (new relfilenodes for every table, index and
# sequence: about 100 pg_class rows a test). With autovacuum off, as on the CI machine, their
# dead rows piled up across runs (140,000 in pg_class after three) and each run of the suite
# took longer than the last (386, 432, 459 s); they are vacuumed at the start of a session
# and every VACUUM_EVERY cleans.
CHURNED_CATALOGS = "pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend"
VACUUM_EVERY = 200
_cleans = 0


def _vacuum_catalogs(eng: Engine) -> None:
    if eng.dialect.name != "postgresql":
        return
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM {CHURNED_CATALOGS}")  # a non-owner gets a warning only


def _clean_database(eng: Engine) -> None:
    global _cleans
    _cleans += 1
    if _cleans % VACUUM_EVERY == 0:
        _vacuum_catalogs(eng)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, redis_url: str, engine: Engine
) -> Iterator[Settings]:
    """Settings for one test, on a clean database and an empty Redis database."""
    _clean_database(engine)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "NEWSDESK_DATA_DIR": str(tmp_path / "data"),
        "NEWSDESK_SEEDS_DIR": str(seeds),
        "NEWSDESK_API_PORT": "0",
        "NEWSDESK_HTTP_TIMEOUT": "5",
        "NEWSDESK_MAINTENANCE_INTERVAL": "5",
        # The tests' feed servers listen on loopback, which the SSRF guard refuses otherwise.
        "NEWSDESK_FETCH_ALLOW": "127.0.0.0/8",
        "NEWSDESK_HOST_SPACING": "0",
        # Authentication stays on; a revoke shows at once, and no test runs out of budget.
        "NEWSDESK_AUTH_CACHE": "0",
        "NEWSDESK_RATE_LIMIT": "100000",
    }
    yield Settings.from_env(env)


@pytest.fixture
def db(settings: Settings, engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def redis_conn(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def recogniser() -> Any:
    """The real spaCy model, loaded once for the whole test session."""
    from workers.nlp import Recogniser, load_model

    return Recogniser(load_model())


@pytest.fixture
def burst(settings: Settings, engine: Engine, recogniser: Any) -> Iterator[Callable[[], int]]:
    """Run an in-process rq worker until the extraction queue is empty; returns jobs done."""
    from workers.context import WorkerContext, install
    from workers.runner import make_worker

    install(
        WorkerContext(
            settings=settings,
            sessions=session_factory(engine),
            recogniser=recogniser,
            metrics=Recorder(redis.Redis.from_url(settings.redis_url)),
        )
    )

    def ended() -> int:
        queue = worker.queues[0]
        return int(queue.finished_job_registry.count + queue.failed_job_registry.count)

    worker = make_worker(settings)

    def run() -> int:
        before = ended()
        worker.work(burst=True, logging_level="WARNING")
        return ended() - before

    yield run
    install(None)


@pytest.fixture
def api_token(db: sessionmaker[Session]) -> str:
    """The bearer token of a read+write API key stored in the test database."""
    from datetime import UTC, datetime

    from services.db.apikeys import create_key

    with db.begin() as session:
        new = create_key(session, name="tests", scopes=("read", "write"), now=datetime.now(UTC))
    return new.token


@pytest.fixture
def auth_headers(api_token: str) -> dict[str, str]:
    """``Authorization`` for ``api_token``, for clients a test builds itself."""
    return {"Authorization": f"Bearer {api_token}"}


@pytest.fixture
async def client(
    settings: Settings, auth_headers: dict[str, str]
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The real API app (``create_app``) on a loopback test server, for one test.

    Every request carries a read+write API key, so tests go through authentication.
    """
    from services.api.app import create_app

    async with TestClient(TestServer(create_app(settings)), headers=auth_headers) as test_client:
        yield test_client


@pytest.fixture
def ctx(settings: Settings, engine: Engine, recogniser: Any) -> Iterator[Any]:
    """A worker context (real model, real database) installed for jobs run in this process."""
    from workers.context import WorkerContext, install

    context = WorkerContext(
        settings=settings, sessions=session_factory(engine), recogniser=recogniser
    )
    install(context)
    yield context
    install(None)


@pytest.fixture
def newsdesk_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``newsdesk ARGS`` -> (exit code, stdout, stderr), on the test database and Redis."""
    from services.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("NEWSDESK_DATA_DIR", str(settings.data_dir))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
