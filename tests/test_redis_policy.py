"""Every role refuses to start on a Redis that may evict keys (queued jobs would vanish).

The evicting servers here are private ``redis-server`` processes started for the test; the
shared test Redis is never reconfigured.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.config import Settings
from services.core.errors import ConfigError
from services.embedded_redis import EmbeddedRedis
from services.redis_check import (
    EvictingRedisError,
    check_policy,
    redis_location,
    require_noeviction,
)
from tests.conftest import REPO

ROLES = ("api", "poller", "worker", "dispatcher", "deliver", "up")


@pytest.fixture
def evicting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A private server set to ``allkeys-lru``, with a user that may not run CONFIG."""
    with EmbeddedRedis(tmp_path_factory.mktemp("evicting"), persistent=False) as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        # What a managed Redis looks like to the application: CONFIG denied.
        client.execute_command("ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all",
                               "-config")  # fmt: skip
        client.close()
        yield server


def _no_config_url(server: EmbeddedRedis) -> str:
    return f"unix://app:app-pw@{server.socket_path}"


def _env(settings: Settings, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = os.environ | settings.child_environment()
    return env | {
        "REDIS_URL": redis_url,
        "NEWSDESK_DATA_DIR": str(tmp_path / "data"),
        "NEWSDESK_LOG_FORMAT": "text",
    }


def _spawn(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", role], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def test_check_policy_accepts_only_noeviction(evicting: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(evicting.url)
    try:
        with pytest.raises(EvictingRedisError, match="maxmemory-policy allkeys-lru"):
            check_policy(client, where="test")
    finally:
        client.close()


def test_shared_test_redis_passes(settings: Settings) -> None:
    assert require_noeviction(settings) in ("noeviction", None)


def test_config_denied_is_a_warning_not_a_refusal(
    settings: Settings, evicting: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    denied = settings.with_overrides(redis_url=_no_config_url(evicting))
    with caplog.at_level(logging.WARNING, logger="newsdesk.redis"):
        assert require_noeviction(denied) is None
    assert "redis.policy_unknown" in caplog.text
    assert "app-pw" not in caplog.text


def test_unreachable_redis_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    gone = settings.with_overrides(redis_url="redis://app:secret-pw@127.0.0.1:1/0")
    with pytest.raises(ConfigError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0") as e:
        require_noeviction(gone)
    assert "secret-pw" not in str(e.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@cache.internal:6380/2", "redis://cache.internal:6380/2"),
        ("rediss://user:pw@[::1]/0", "rediss://[::1]:6379/0"),
        ("unix://user:pw@/run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_location_never_shows_credentials(url: str, shown: str) -> None:
    assert redis_location(url) == shown


@pytest.mark.slow
def test_every_role_refuses_an_evicting_redis(
    settings: Settings, evicting: EmbeddedRedis, tmp_path: Path
) -> None:
    env = _env(settings, evicting.url, tmp_path)
    procs = {role: _spawn(role, env) for role in ROLES}
    try:
        for role, proc in procs.items():
            _, err = proc.communicate(timeout=30)
            message = err.decode()
            assert proc.returncode == 2, (role, message)
            assert f"newsdesk {role}: error [redis_evicts]" in message, message
            assert "maxmemory-policy allkeys-lru" in message
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    # Nothing was started against it: no worker registered, no job queued.
    client = redis.Redis.from_url(evicting.url)
    try:
        assert client.keys("rq:*") == []
    finally:
        client.close()


@pytest.mark.slow
def test_a_role_starts_with_a_warning_when_config_is_denied(
    settings: Settings, evicting: EmbeddedRedis, tmp_path: Path
) -> None:
    env = _env(settings, _no_config_url(evicting), tmp_path)
    err_path = tmp_path / "dispatcher.log"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "dispatcher"], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "dispatcher.ready" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = err_path.read_text()
    assert "redis.policy_unknown" in log
    assert "app-pw" not in log
