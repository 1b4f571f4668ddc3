"""`newsdesk up`: embedded Redis + migrations + api, poller, workers and webhooks under one
parent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.config import Settings
from services.embedded_redis import EmbeddedRedis
from services.logs import setup_logging
from services.procs import detach_and_die_with_parent

log = logging.getLogger("newsdesk.up")

ROLES = ("api", "poller", "worker", "dispatcher", "deliver")
STOP_GRACE = 30.0
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Child:
    role: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    restart_at: float | None = None


def _spawn(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", role],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=detach_and_die_with_parent,
    )


def _wait_for_api(settings: Settings, timeout: float) -> bool:
    url = f"http://{settings.api_host}:{settings.api_port}/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def ensure_first_key(settings: Settings) -> str | None:
    """Create a read+write API key when none was ever created; its token, or None.

    The token is returned to be shown once; only its hash is stored. Nothing is created when
    the API runs without authentication, or when keys exist (revoked ones included: an
    operator who revoked every key meant it, and `newsdesk keys create` makes a new one).
    """
    if not settings.auth:
        return None
    from services.db.apikeys import count_keys, create_key
    from services.db.engine import make_engine, session_factory, transaction

    engine = make_engine(settings.database_url, role="up")
    try:
        with transaction(session_factory(engine)) as session:
            if count_keys(session):
                return None
            new = create_key(
                session, name="first key", scopes=("read", "write"), now=datetime.now(UTC)
            )
            return new.token
    finally:
        engine.dispose()


def first_key_notice(token: str) -> str:
    """What `newsdesk up` prints about the key it created."""
    return (
        "\nnewsdesk created an API key (scopes: read, write). It is shown only this once;"
        f" copy it now:\n\n    {token}\n\nSend it as `Authorization: Bearer <key>`;"
        " `newsdesk keys` creates, lists and revokes keys.\n"
    )


def up(settings: Settings) -> int:
    """Run the whole service until SIGINT/SIGTERM; returns the exit status."""
    setup_logging(settings.log_level, "up")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_server = EmbeddedRedis(settings.data_dir) if settings.embedded_redis else None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children = [Child(role) for role in ROLES]
    try:
        if redis_server is not None:
            redis_server.start()
        from services.cli import migrate
        from services.redis_check import require_noeviction

        require_noeviction(settings)  # the embedded server is started with noeviction

        migrate(settings)
        token = ensure_first_key(settings)
        env = os.environ | settings.child_environment()
        for child in children:
            child.proc, child.started_at = _spawn(child.role, env), time.monotonic()
        ready = _wait_for_api(settings, timeout=30)
        if token is not None:
            # Shown whether or not the API came up: it is the only copy.
            print(first_key_notice(token), flush=True)
        if ready:
            where = f"http://{settings.api_host}:{settings.api_port}"
            print(
                f"newsdesk is up: API on {where}/v1/articles  (data: {settings.data_dir})",
                flush=True,
            )
            if settings.seeds_dir:
                print(f"ingesting {settings.seeds_dir}; press Ctrl-C to stop", flush=True)
        while not stopping:
            _supervise(children, env)
            time.sleep(0.2)
        print("newsdesk: stopping…", flush=True)
    finally:
        _stop_children(children)
        if redis_server is not None:
            redis_server.stop()
    return 0


def _supervise(children: list[Child], env: dict[str, str]) -> None:
    """Restart a child that exited, backing off when it keeps failing.

    Never sleeps: a pending restart is a time to reach, so Ctrl-C is answered at once.
    """
    now = time.monotonic()
    for child in children:
        if child.proc is None or child.proc.poll() is None:
            continue
        if child.restart_at is None:
            if now - child.started_at > 60:
                child.restarts = 0
            delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
            log.warning("%s exited with %s; restarting in %.0fs", child.role,
                        child.proc.returncode, delay)  # fmt: skip
            child.restart_at = now + delay
        elif now >= child.restart_at:
            child.restarts += 1
            child.restart_at = None
            child.proc, child.started_at = _spawn(child.role, env), now


def _stop_children(children: list[Child]) -> None:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
