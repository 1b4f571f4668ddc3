"""``newsdesk api --processes N``: N serving processes on one port, supervised, stopped by SIGTERM.

The real command runs as a subprocess; the sockets each process listens on are read from
``/proc`` (Linux), so the test sees the kernel's view: how many processes accept on the port.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.errors import ConfigError
from services.db import feeds
from tests.test_shutdown import (  # noqa: F401
    Role,
    _listening_port,
    feeds_locked,
    late_feed_request,
    read_answer,
    start,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT, /proc"),
]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _listeners(parent: int, port: int) -> set[int]:
    """The children of ``parent`` holding a socket that listens on ``port``."""
    inodes = _listening_inodes(port)
    pids: set[int] = set()
    for pid in _children(parent):
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            pids.add(pid)
    return pids


def _get(port: int, token: str, path: str = "/v1/articles?limit=5") -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        resp.read()
        return int(resp.status)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not seen in {timeout}s"
        time.sleep(0.1)


def test_two_processes_listen_on_one_port_and_sigterm_stops_them_all(
    api_token: str, start: Callable[..., Role],  # noqa: F811
) -> None:  # fmt: skip
    role = start(["api", "--processes", "2"])
    port = _listening_port(role)  # announced once every process serves
    serving = _listeners(role.proc.pid, port)

    assert len(serving) == 2, role.output()
    assert role.proc.pid not in serving  # the supervisor itself accepts nothing
    assert [_get(port, api_token) for _ in range(20)] == [200] * 20

    code, took = role.terminate(within=15)

    assert code == 0, role.output()
    assert took < 12
    for pid in serving:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)
    assert not _listening_inodes(port)
    assert "api.stopped index=0" in role.output()
    assert "api.stopped index=1" in role.output()
    assert "api.stopped processes=2" in role.output()
    assert "Traceback" not in role.output()


def test_a_serving_process_that_dies_is_replaced(
    api_token: str, start: Callable[..., Role],  # noqa: F811
) -> None:  # fmt: skip
    role = start(["api"], NEWSDESK_API_PROCESSES="2")
    port = _listening_port(role)
    first = _listeners(role.proc.pid, port)
    assert len(first) == 2, role.output()
    victim = min(first)

    os.kill(victim, signal.SIGKILL)

    _wait(lambda: len(_listeners(role.proc.pid, port) - {victim}) == 2, "a replacement")
    assert _get(port, api_token) == 200
    code, _ = role.terminate(within=15)
    assert code == 0, role.output()


def test_sigterm_lets_each_process_finish_its_request_in_flight(
    engine: Engine, db: sessionmaker[Session], api_token: str,
    start: Callable[..., Role],  # noqa: F811
) -> None:  # fmt: skip
    role = start(["api", "--processes", "2"])
    port = _listening_port(role)
    request = late_feed_request(api_token)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        with feeds_locked(engine):
            client.sendall(request)
            time.sleep(0.5)
            role.proc.send_signal(signal.SIGTERM)
            _wait(lambda: not _listening_inodes(port), "every listener closed", timeout=5)
            assert role.proc.poll() is None  # still draining
        answer = read_answer(client)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert role.proc.wait(10) == 0, role.output()
    with db() as session:
        assert [f.title for f in feeds.list_feeds(session)] == ["late"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_processes_setting() -> None:
    assert Settings.from_env({}).api_processes == 1
    settings = Settings.from_env({"NEWSDESK_API_PROCESSES": "3"})
    assert settings.api_processes == 3
    assert settings.child_environment()["NEWSDESK_API_PROCESSES"] == "3"
    with pytest.raises(ConfigError):
        Settings.from_env({"NEWSDESK_API_PROCESSES": "0"})
