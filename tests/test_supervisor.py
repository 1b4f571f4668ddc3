"""Process supervision: `newsdesk up` restarts children with backoff without ever blocking
shutdown, and processes forked by a role end with it."""

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


FORKING = """
import os, sys, time
from services.procs import forks_die_with_this_process
forks_die_with_this_process()
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
    os._exit(0)
print("forked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_forks_end_with_the_process_that_forked_them() -> None:
    """A child and a grandchild forked (no exec) after forks_die_with_this_process: killing
    the top process with SIGKILL ends the child, whose end ends the grandchild."""
    import os
    import signal

    from tests.conftest import REPO
    from tests.faults.cluster import alive, descendants

    top = subprocess.Popen([sys.executable, "-c", FORKING], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert top.stdout is not None and top.stdout.readline() == b"forked\n"
        deadline = time.monotonic() + 5
        while len(below := descendants(top.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(below) == 2, "a child and a grandchild, both alive"
        time.sleep(0.2)  # both still alive: arming the signal did not end either
        assert all(os.path.exists(f"/proc/{pid}") for pid in below)
        os.kill(top.pid, signal.SIGKILL)
        top.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in below):
            time.sleep(0.02)
        left = [pid for pid in below if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "a fork outlived the process that forked it"
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
