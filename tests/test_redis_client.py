"""The service's Redis clients parse replies with hiredis (a dependency of the package)."""

from __future__ import annotations

from services.config import Settings
from services.queue import redis_client


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
