"""SIGTERM stops every role cleanly: work in hand is finished or handed back, nothing is lost.

Each test starts the real ``newsdesk <role>`` process, sends SIGTERM to it alone (as
``docker stop`` signals a container's main process) while it is working, and checks the exit
status, the time it took, and what it left in SQL and Redis.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.job import JobStatus
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import feeds
from services.poller.service import LEASE, STOP_GRACE
from services.queue import extract_queue, webhook_queue
from tests.conftest import REPO
from tests.faults.cluster import alive, descendants
from tests.test_webhooks import FAST, Hooks, Receiver, receiver  # noqa: F401

pytestmark = pytest.mark.slow

SLOW_JOB = "tests.test_shutdown.slow_job"


def slow_job(seconds: float) -> str:
    """An rq job that keeps its worker busy for ``seconds`` (run by the workers below)."""
    time.sleep(seconds)
    return "done"


class Role:
    """One ``newsdesk <role>`` process with its stderr kept in a file."""

    def __init__(self, settings: Settings, argv: list[str], log: Path, **env: str) -> None:
        self.log = log
        full_env = os.environ | settings.child_environment() | {"NEWSDESK_LOG_FORMAT": "text"}
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *argv],
                cwd=REPO, env=full_env | env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"{what} not seen in {timeout}s:\n{self.output()}"
            time.sleep(0.05)

    def terminate(self, within: float) -> tuple[int, float]:
        """SIGTERM to the role's main process only; its exit status and the seconds it took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {within}s after SIGTERM:\n{self.output()}"
            ) from None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:  # the API announces its port there
            self.proc.stdout.close()


@pytest.fixture
def start(tmp_path: Path, settings: Settings) -> Iterator[Callable[..., Role]]:
    started: list[Role] = []

    def run(argv: list[str], *, settings: Settings = settings, **env: str) -> Role:
        role = Role(settings, argv, tmp_path / f"{argv[0]}-{len(started)}.log", **env)
        started.append(role)
        return role

    yield run
    for role in started:
        role.kill()


def _workers(conn: redis.Redis, queue: Queue) -> int:
    return len(Worker.all(connection=conn, queue=queue))


# -- worker -------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_finishes_the_job_in_hand_and_leaves_the_rest_queued(
    settings: Settings, redis_conn: redis.Redis, start: Callable[..., Role], processes: int
) -> None:
    queue = extract_queue(settings, redis_conn)
    role = start(["worker", "--workers", str(processes)])
    role.wait_for(lambda: _workers(redis_conn, queue) == processes, "workers registered", 60)
    busy = [queue.enqueue(SLOW_JOB, 2.5, job_timeout=30) for _ in range(processes)]
    role.wait_for(lambda: queue.started_job_registry.count == processes, "jobs started")
    waiting = queue.enqueue(SLOW_JOB, 0.1, job_timeout=30)

    code, took = role.terminate(within=15)

    assert code == 0, role.output()
    assert took < 10
    for job in busy:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == "done"
    assert queue.started_job_registry.count == 0
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED  # handed on, not lost
    assert queue.job_ids == [waiting.id]
    assert _workers(redis_conn, queue) == 0  # each worker deregistered itself


def _forks(pid: int) -> list[int]:
    """The live processes below ``pid`` forked without exec (same command line): rq's
    scheduler (the worker restarts it if it ends), not helpers such as multiprocessing's
    resource tracker."""
    own = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if alive(child) and Path(f"/proc/{child}/cmdline").read_bytes() == own:
                found.append(child)
    return found


def test_a_killed_worker_leaves_no_scheduler_behind(
    settings: Settings, redis_conn: redis.Redis, start: Callable[..., Role]
) -> None:
    """rq's scheduler runs in a process forked by the worker. SIGKILL gives the worker no
    chance to stop it: the scheduler must end by itself and hand its lock back."""
    from rq.scheduler import RQScheduler

    queue = extract_queue(settings, redis_conn)
    lock = RQScheduler.get_locking_key(queue.name)
    role = start(["worker", "--workers", "1"])
    role.wait_for(lambda: _workers(redis_conn, queue) == 1, "worker registered", 60)
    role.wait_for(lambda: bool(redis_conn.exists(lock)), "the scheduler lock taken")
    role.wait_for(lambda: bool(_forks(role.proc.pid)), "its scheduler process")
    schedulers = _forks(role.proc.pid)

    os.kill(role.proc.pid, signal.SIGKILL)
    role.proc.wait()

    deadline = time.monotonic() + 10
    while any(map(alive, schedulers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in schedulers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # this test leaves no orphan either way
    assert not left, "the scheduler outlived its worker"
    assert not redis_conn.exists(lock), "the scheduler stopped warmly, releasing its lock"


# -- deliver ------------------------------------------------------------------------------


def test_deliver_finishes_the_post_in_flight(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    receiver: Receiver,  # noqa: F811
    start: Callable[..., Role],
) -> None:
    tuned = settings.with_overrides(**FAST | {"webhook_timeout": 6.0, "webhook_lease": 10.0})
    hooks = Hooks(tuned, engine, redis_conn)
    try:
        receiver.slow["/hook"] = 2.0
        sub = hooks.subscribe(receiver.url())
        queue = webhook_queue(tuned, redis_conn)
        role = start(["deliver", "--workers", "1"], settings=tuned)
        role.wait_for(lambda: _workers(redis_conn, queue) == 1, "delivery worker registered")
        hooks.event()
        hooks.dispatcher.run_once()
        role.wait_for(lambda: bool(receiver.hits), "the POST")

        code, took = role.terminate(within=10)

        assert code == 0, role.output()
        assert took < 8
        delivery = hooks.delivery(sub.id)
        assert delivery.status == "succeeded"
        assert len(receiver.hits) == 1
        assert queue.started_job_registry.count == 0
        assert queue.count == 0
    finally:
        hooks.close()


# -- dispatcher ---------------------------------------------------------------------------


def test_dispatcher_stops_its_loop(
    settings: Settings,
    engine: Engine,
    redis_conn: redis.Redis,
    receiver: Receiver,  # noqa: F811
    start: Callable[..., Role],
) -> None:
    tuned = settings.with_overrides(**FAST)
    hooks = Hooks(tuned, engine, redis_conn)
    try:
        hooks.subscribe(receiver.url())
        queue = webhook_queue(tuned, redis_conn)
        role = start(["dispatcher"], settings=tuned)
        role.wait_for(lambda: "dispatcher.ready" in role.output(), "dispatcher.ready")
        hooks.event()
        role.wait_for(lambda: queue.count == 1, "a delivery queued by the dispatcher")

        code, took = role.terminate(within=5)

        assert code == 0, role.output()
        assert took < 3
        assert "dispatcher.stopped" in role.output()
        assert "Traceback" not in role.output()
    finally:
        hooks.close()


# -- poller -------------------------------------------------------------------------------


class HangingFeed:
    """A loopback HTTP server that holds every request until released."""

    def __init__(self) -> None:
        self.requests = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.set()
                outer.release.wait(30)
                body = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the poller hung up

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_poller_abandons_a_stuck_cycle_and_the_lease_hands_the_feed_out_again(
    settings: Settings, db: sessionmaker[Session], redis_conn: redis.Redis,
    start: Callable[..., Role],
) -> None:  # fmt: skip
    server = HangingFeed()
    try:
        with db.begin() as session:
            feed = feeds.add_feed(
                session, url=server.url, kind="http", interval_seconds=900,
                now=datetime.now(UTC),
            )  # fmt: skip
        # Requests may take a minute: only the stop grace can end this cycle.
        role = start(["poller"], NEWSDESK_HTTP_TIMEOUT="60", NEWSDESK_SEEDS_DIR="")
        role.wait_for(server.requests.is_set, "the feed request", timeout=30)
        claimed_at = datetime.now(UTC)

        code, took = role.terminate(within=STOP_GRACE + 8)

        assert code == 0, role.output()
        assert STOP_GRACE - 0.5 < took < STOP_GRACE + 5
        assert "poller.cycle_abandoned" in role.output()
        assert "poller.stopped" in role.output()
    finally:
        server.close()
    with db() as session:
        stored = feeds.get_feed(session, feed.id)
    # Still claimed, not failed: abandoning is not the feed's fault, and nothing was queued.
    assert stored.error_count == 0
    assert stored.etag is None and stored.body_hash is None
    assert extract_queue(settings, redis_conn).count == 0
    lease_end = stored.next_poll_at
    assert lease_end - claimed_at > timedelta(minutes=1)
    # The lease runs out and the next cycle of any poller claims the feed again.
    with db.begin() as session:
        early = feeds.claim_due_feeds(
            session, kind="http", now=lease_end - timedelta(seconds=1), limit=10, lease=LEASE
        )
    assert early == []
    with db.begin() as session:
        again = feeds.claim_due_feeds(session, kind="http", now=lease_end, limit=10, lease=LEASE)
    assert [f.id for f in again] == [feed.id]


# -- api ----------------------------------------------------------------------------------


def _listening_port(role: Role) -> int:
    assert role.proc.stdout is not None
    line = role.proc.stdout.readline().decode()
    assert "listening on" in line, role.output()
    return int(line.rsplit(":", 1)[1])


def late_feed_request(api_token: str) -> bytes:
    """A raw request creating a feed: :func:`feeds_locked` holds it in its handler."""
    body = json.dumps({"url": "http://127.0.0.1:9/late.xml", "title": "late"}).encode()
    return (
        f"POST /v1/feeds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def read_answer(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    return answer


@contextmanager
def feeds_locked(engine: Engine) -> Iterator[None]:
    """The feeds table locked for writing: a request creating a feed waits in its handler."""
    with engine.begin() as locked:
        if engine.dialect.name == "postgresql":
            locked.exec_driver_sql("LOCK TABLE feeds IN EXCLUSIVE MODE")
        else:
            locked.exec_driver_sql("UPDATE feeds SET title = title WHERE id < 0")
        yield


def test_api_finishes_the_request_in_flight_and_accepts_no_new_ones(
    settings: Settings, engine: Engine, db: sessionmaker[Session], api_token: str,
    start: Callable[..., Role],
) -> None:  # fmt: skip
    role = start(["api"])
    port = _listening_port(role)
    request = late_feed_request(api_token)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        with feeds_locked(engine):
            client.sendall(request)
            time.sleep(0.5)
            role.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(OSError):  # the listening socket is closed: no new requests
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            assert role.proc.poll() is None
        answer = read_answer(client)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert role.proc.wait(10) == 0, role.output()
    assert "api.stopped" in role.output()
    with db() as session:
        assert [f.title for f in feeds.list_feeds(session)] == ["late"]
