"""The benches' scratch environment cleans up after a SIGTERM, not only a normal end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

SCRIPT = """
import sys, time
from contextlib import ExitStack
sys.path.insert(0, "bench")
from bench_scratch import scratch_environment
with ExitStack() as stack:
    tmp, env = scratch_environment(stack, database_url=None, redis_url=None)
    print(env["REDIS_URL"], flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_bench_stopped_with_sigterm_stops_its_embedded_redis() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    socket = url.removeprefix("unix://").split("?")[0]
    found = subprocess.run(["pgrep", "-f", socket], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    assert pids, f"no redis-server for {url}"
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "the scratch Redis outlived its bench"
    finally:
        for pid in pids:  # never leave one behind, even when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
