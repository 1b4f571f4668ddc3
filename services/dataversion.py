"""The data version: a Redis counter bumped after every commit that changes what the API's
cached reads return (articles, entities, stories, and the feed fields shown with articles).

The API's response cache (``services/api/cache.py``) serves an entry only while the version
it was built at is still the current one. Writers bump it after committing: the workers in
the same pipeline as their metrics (:meth:`services.metrics.Recorder.touch`), the API after a
successful write request, the administration commands after a change.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

KEY = "newsdesk:data_version"
# A command-line bump must not hang on a Redis that is not there (the TTL covers a lost one).
CLI_TIMEOUT = 2.0


def bump(client: Any) -> Any:
    """INCR the version on ``client``.

    ``client`` is a ``redis.Redis`` (runs now), a pipeline (queued with its other commands)
    or a ``redis.asyncio.Redis`` (the caller awaits the result).
    """
    return client.incr(KEY)


def bump_now(redis_url: str) -> bool:
    """Bump the version through a short-lived connection (administration commands).

    A failure returns False (logged at INFO: without a running Redis no API serves either):
    the change is committed already, and cached entries expire within
    ``NEWSDESK_API_CACHE_SECONDS``.
    """
    import redis

    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=CLI_TIMEOUT, socket_timeout=CLI_TIMEOUT
    )
    try:
        bump(client)
        return True
    except (redis.RedisError, OSError) as exc:
        log.info("data_version.bump_failed error=%s", type(exc).__name__)
        return False
    finally:
        client.close()
