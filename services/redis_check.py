"""Startup check that Redis keeps queued work: its ``maxmemory-policy`` must be ``noeviction``.

Under any other policy a Redis server that reaches ``maxmemory`` deletes keys to make room,
and rq's job hashes and queue lists are keys like any other: queued jobs would vanish without
an error. With ``noeviction`` a full Redis refuses writes instead, which the poller and the
dispatcher see and retry. Every role that uses Redis calls :func:`require_noeviction` before
it starts working.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import redis

from services.config import Settings
from services.core.errors import ConfigError

log = logging.getLogger("newsdesk.redis")

REQUIRED_POLICY = "noeviction"
CHECK_TIMEOUT = 10.0


class EvictingRedisError(ConfigError):
    """Redis may evict keys, so queued jobs could be lost without an error."""

    code = "redis_evicts"


def redis_location(url: str) -> str:
    """``url`` without credentials, for messages (``host:port/db`` or the socket path)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}:{parts.port or 6379}{parts.path}"


def eviction_policy(client: redis.Redis) -> str | None:
    """The server's ``maxmemory-policy``, or None when the server does not let us read it.

    Managed services often disable or rename ``CONFIG`` (an unknown-command error) or deny
    it to the application's ACL user (``NOPERM``); both are ``ResponseError``.
    """
    try:
        reply = client.config_get("maxmemory-policy")
    except redis.ResponseError as exc:
        log.warning(
            "redis.policy_unknown error=%s; cannot read maxmemory-policy, make sure it is "
            "noeviction (queued jobs are lost if Redis evicts keys)",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return None
    value = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if value is None:
        log.warning("redis.policy_unknown error=empty_reply; make sure it is noeviction")
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def check_policy(client: redis.Redis, *, where: str) -> str | None:
    """Raise :class:`EvictingRedisError` unless ``client``'s server is set to ``noeviction``.

    Returns:
        The policy read from the server, or None when it could not be read (logged).
    """
    policy = eviction_policy(client)
    if policy is not None and policy != REQUIRED_POLICY:
        raise EvictingRedisError(
            f"Redis at {where} has maxmemory-policy {policy}: it may evict queued jobs "
            f"without an error. Set `maxmemory-policy {REQUIRED_POLICY}` (redis.conf, "
            f"`--maxmemory-policy {REQUIRED_POLICY}` or `CONFIG SET maxmemory-policy "
            f"{REQUIRED_POLICY}`) and start again."
        )
    return policy


def require_noeviction(settings: Settings) -> str | None:
    """Check the Redis of ``settings`` (see :func:`check_policy`).

    Raises:
        EvictingRedisError: the server evicts keys.
        ConfigError: the server cannot be reached, so nothing can be checked or queued.
    """
    where = redis_location(settings.redis_url)
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        return check_policy(client, where=where)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach Redis at {where}: {exc}", code="redis_unreachable"
        ) from exc
    finally:
        client.close()
