"""A small process pool: N spawned worker processes, restarted when they die.

Shared by the extraction workers (`newsdesk worker`) and the webhook delivery workers
(`newsdesk deliver`); it imports nothing heavy, so a delivery supervisor stays small.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from services.config import Settings

log = logging.getLogger("newsdesk.worker")

RESTART_DELAY = 2.0


def supervise(settings: Settings, *, count: int, target: Callable[[Settings, int], None]) -> None:
    """Run ``target(settings, index)`` in ``count`` spawned processes until SIGTERM/SIGINT,
    restarting any that dies (shared by extraction and webhook delivery workers)."""
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int) -> BaseProcess:
        proc = ctx.Process(target=target, args=(settings, i), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    procs = [start(i) for i in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for i, proc in enumerate(procs):
            if proc.is_alive():
                continue
            if stopping:
                continue
            log.warning("worker.died index=%d exitcode=%s; restarting", i, proc.exitcode)
            time.sleep(RESTART_DELAY)
            procs[i] = start(i)
        if stopping and not any(p.is_alive() for p in procs):
            return
        time.sleep(0.2)
