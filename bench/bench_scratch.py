"""A throwaway newsdesk environment for a bench run: temp data dir, SQLite, embedded Redis."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

from services.embedded_redis import EmbeddedRedis


def scratch_environment(
    stack: ExitStack, *, database_url: str | None, redis_url: str | None, **extra: str
) -> tuple[Path, dict[str, str]]:
    """The environment variables for one bench run, and its temp directory.

    Without ``database_url`` a SQLite file in the temp directory is used; without
    ``redis_url`` an embedded, non-persistent Redis is started (stopped by ``stack``).
    ``extra`` adds or overrides variables.

    SIGTERM ends the run as an exception would, so ``stack`` still stops what it started
    (by default SIGTERM kills the interpreter without unwinding, leaving the Redis behind).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    if not redis_url:
        redis_url = stack.enter_context(EmbeddedRedis(tmp / "r", persistent=False)).url
    env = {
        "DATABASE_URL": database_url or f"sqlite:///{tmp / 'bench.sqlite3'}",
        "REDIS_URL": redis_url,
        "NEWSDESK_DATA_DIR": str(tmp),
        "NEWSDESK_SEEDS_DIR": "",
    }
    return tmp, env | extra


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)
