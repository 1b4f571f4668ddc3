"""`newsdesk up`'s supervisor restarts children with backoff without ever blocking shutdown."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from services import supervisor
from services.supervisor import Child


def _failing(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])


def test_restart_backoff_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "_spawn", _failing)
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF", (0.3, 30.0))
    child = Child("worker", proc=_failing("worker", {}), started_at=time.monotonic())
    child.proc.wait()
    spawned = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(spawned) < 2:
        started = time.monotonic()
        before = child.proc
        supervisor._supervise([child], {})
        assert time.monotonic() - started < 0.2, "supervising must not wait out a backoff"
        if child.proc is not before:
            spawned.append(time.monotonic())
            child.proc.wait()
        time.sleep(0.05)
    # The first restart came after the short backoff; the second is 30 s away, still pending.
    assert len(spawned) == 1
    assert child.restart_at is not None and child.restart_at - time.monotonic() > 20
    supervisor._stop_children([child])
