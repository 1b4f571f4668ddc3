"""The service's Redis clients parse replies and pack commands with hiredis (a dependency of
the package)."""

from __future__ import annotations

from services.config import Settings
from services.queue import redis_client
from services.redis_packer import DirectPacker


def test_the_service_redis_client_parses_replies_with_hiredis(settings: Settings) -> None:
    """rq's per-job bookkeeping is many small replies; redis-py's pure-Python parser cost a
    worker about 0.1 ms of CPU per article more (bench/extract.py)."""
    client = redis_client(settings)
    try:
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            assert type(connection._parser).__name__ == "_HiredisParser"
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_the_service_redis_client_packs_commands_with_hiredis(settings: Settings) -> None:
    """Commands go out through DirectPacker and read back as written: words of a two-word
    command, text, binary, numbers, a value past redis-py's chunk cut-off, a memoryview."""
    client = redis_client(settings)
    key = "newsdesk:test:packer"
    big = bytes(range(256)) * 40  # 10,240 bytes, past the cut-off
    try:
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._command_packer, DirectPacker)
        finally:
            client.connection_pool.release(connection)
        assert client.client_setname("packer-test")
        assert client.client_getname() == "packer-test"  # redis-py decodes this reply
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"text": "Zürich – 東京", "n": -(2**40), "x": 0.1 + 0.2})
            pipe.hset(key, "big", big)
            pipe.hset(key, "view", memoryview(big)[:7000])
            pipe.zadd(f"{key}:z", {"a": 1.5, "b": float("inf")})
            pipe.execute()
        stored = client.hgetall(key)
        assert stored[b"text"] == "Zürich – 東京".encode()
        assert stored[b"n"] == b"-1099511627776"
        assert float(stored[b"x"]) == 0.1 + 0.2
        assert stored[b"big"] == big
        assert stored[b"view"] == big[:7000]
        assert client.zscore(f"{key}:z", "a") == 1.5
        assert client.zscore(f"{key}:z", "b") == float("inf")
    finally:
        client.delete(key, f"{key}:z")
        client.close()
