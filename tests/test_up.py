"""`newsdesk up` as a user runs it: embedded defaults, seed served, clean stop, no re-ingest."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
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


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
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


def _wait_for_line(
    proc: subprocess.Popen[str], needle: str, timeout: float, seen: list[str] | None = None
) -> str:
    """The first line holding ``needle``; the lines before it are added to ``seen``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if seen is not None:
            seen.append(line)
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
        before: list[str] = []
        line = _wait_for_line(proc, "newsdesk is up", timeout=60, seen=before)
        assert f"{base}/v1/articles" in line
        # The first start creates a read+write API key and shows it once, before that line.
        keys = re.findall(r"^\s+(nd_[A-Za-z0-9_-]{51})$", "".join(before), re.M)
        assert len(keys) == 1, before
        token = keys[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/v1/articles", timeout=5)
        assert refused.value.code == 401
        deadline = time.monotonic() + 60
        articles: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not articles:
            articles = _get(f"{base}/v1/articles", token)["data"]
            time.sleep(0.3)
        served_after = time.monotonic() - started
        assert [a["title"] for a in articles] == [SEED_TITLE]
        people = {e["name"] for e in _get(f"{base}/v1/entities?type=person", token)["data"]}
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
        before = []
        _wait_for_line(proc, "newsdesk is up", timeout=60, seen=before)
        assert not any("nd_" in line for line in before)  # the key exists: none is created
        time.sleep(3)  # several folder scans
        assert len(_get(f"{base}/v1/articles", token)["data"]) == 1
    finally:
        assert _stop(proc) == 0
    assert (_rows(db, "events"), _rows(db, "sightings")) == (events, sightings)
    assert _rows(db, "api_keys") == 1
    with sqlite3.connect(db) as conn:
        stored = " ".join(str(v) for row in conn.execute("SELECT * FROM api_keys") for v in row)
    assert token not in stored and token[11:] not in stored
