"""`newsdesk up` as a user runs it: embedded defaults, seed served, clean stop, no re-ingest."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SEED_TITLE = "Biden sends Blinken to Mideast to push peace talks after Gaza truce"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("NEWSDESK_TEST_DATABASE_URL")),
        reason="`newsdesk up` uses embedded defaults; covered by the SQLite run",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDESK_", "DATABASE_"))}
    env.pop("REDIS_URL", None)
    env |= {
        "NEWSDESK_DATA_DIR": str(tmp_path / "data"),
        "NEWSDESK_SEEDS_DIR": str(REPO / "seeds"),
        "NEWSDESK_API_PORT": str(port),
        "NEWSDESK_FOLDER_INTERVAL": "0.5",
        "NEWSDESK_WORKERS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"`newsdesk up` never printed {needle!r}")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_up_serves_the_seed_then_restarts_without_reingesting(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = _start(tmp_path, port)
    try:
        line = _wait_for_line(proc, "newsdesk is up", timeout=60)
        assert f"{base}/v1/articles" in line
        deadline = time.monotonic() + 60
        articles: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not articles:
            articles = _get(f"{base}/v1/articles")["data"]
            time.sleep(0.3)
        served_after = time.monotonic() - started
        assert [a["title"] for a in articles] == [SEED_TITLE]
        people = {e["name"] for e in _get(f"{base}/v1/entities?type=person")["data"]}
        assert {"Antony J. Blinken", "Biden"} <= people
    finally:
        assert _stop(proc) == 0
    print(f"seed served {served_after:.1f}s after start")
    db = tmp_path / "data" / "newsdesk.sqlite3"
    assert (tmp_path / "data" / "appendonly.aof").exists() or any(
        (tmp_path / "data").glob("appendonly*")
    )
    events, sightings = _rows(db, "events"), _rows(db, "sightings")
    assert (events, _rows(db, "articles")) == (1, 1)

    proc = _start(tmp_path, port)
    try:
        _wait_for_line(proc, "newsdesk is up", timeout=60)
        time.sleep(3)  # several folder scans
        assert len(_get(f"{base}/v1/articles")["data"]) == 1
    finally:
        assert _stop(proc) == 0
    assert (_rows(db, "events"), _rows(db, "sightings")) == (events, sightings)
