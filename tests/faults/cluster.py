"""The roles as real processes (`newsdesk poller|worker|dispatcher|deliver|api`), and faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job

from services.config import Settings
from tests.conftest import REPO


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux ``/proc``), children first."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        kids = [int(p) for p in text.split()]
        found.extend(kids)
        frontier.extend(kids)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _drain(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.stdout is not None
    with log.open("ab") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()


@dataclass
class Role:
    """One started ``newsdesk <role>`` process (and the processes it started)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the role's own process (a supervisor's children get its death signal)."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (warm), then SIGKILL whatever is left of the role after ``timeout``."""
        family = descendants(self.pid)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + timeout
        for pid in family:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """Starts roles with ``settings`` (plus per-role environment) and stops them all."""

    settings: Settings
    logs: Path
    roles: list[Role] = field(default_factory=list)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NEWSDESK_", "DATABASE_URL", "REDIS_URL"))
        }
        return base | self.settings.child_environment() | (extra or {})

    def start(self, role: str, *args: str, env: dict[str, str] | None = None) -> Role:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{role}-{len(self.roles)}.log"
        # Output goes through a pipe, copied to the log by a thread here: a role whose file
        # writes fail (the disk-full scenario) can still say why.
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", role, *args],
            cwd=REPO, env=self.environment(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=_drain, args=(proc, log), daemon=True).start()
        started = Role(role, proc, log)
        self.roles.append(started)
        return started

    def stop_all(self) -> None:
        for role in reversed(self.roles):
            role.stop(timeout=10)

    def output(self) -> str:
        """Everything every role printed."""
        return "\n".join(r.output() for r in self.roles)

    def logs_text(self) -> str:
        return "\n".join(f"== {r.log.name}\n{r.output()[-4000:]}" for r in self.roles)


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition()`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def busy_workers(conn: redis.Redis, queue: Queue) -> dict[int, str]:
    """Pid -> id of the job it is running, for the queue's workers that are mid-job."""
    busy = {}
    for job_id in queue.started_job_registry.get_job_ids():
        try:
            job = Job.fetch(job_id, connection=conn, serializer=queue.serializer)
        except Exception:
            continue
        name = job.worker_name or ""
        tail = name.rsplit("-", 1)[-1]
        if tail.isdigit():
            busy[int(tail)] = job_id
    return busy
