"""Per-client request budgets kept in Redis, shared by every API process.

A fixed window: the first request of a client starts a window of ``window`` seconds and a
counter that expires with it; one Lua script counts and reads the remaining time in a single
round trip. A client can spend at most twice the budget across a window boundary, which is
acceptable for a guard against runaway clients (not a billing meter).

When Redis does not answer, requests are let through (fail open) and one warning is logged per
outage: the API's reads come from SQL and must not stop with Redis. During an outage Redis is
not asked again for a few seconds, so a hung Redis adds no latency to every request.

The same round trip reads the data version (:mod:`services.dataversion`) for the response
cache when the request asks for it; with the limit off it is read with one GET.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "newsdesk:ratelimit:"
# After a failure Redis is left alone this long (seconds) before it is tried again.
OUTAGE_BACKOFF = 5.0

# KEYS[1]: the client's counter; KEYS[2] (optional): the data version; ARGV[1]: window in
# milliseconds. Returns {count, ms left, version or "0" (never bumped) or false (not asked)}.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
local version = false
if KEYS[2] then
  version = redis.call('GET', KEYS[2]) or '0'
end
return {n, ttl, version}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    # Whole seconds until the window ends (what Retry-After says when not allowed).
    reset_after: int
    # The data version read in the same round trip; None when not asked or Redis failed.
    version: bytes | None = None


class RateLimiter:
    """``limit`` requests per ``window`` seconds per client id; ``limit`` 0 allows everything.

    ``version_key``: the data version's key, read by :meth:`hit` when asked (None: never).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        version_key: str | None = None,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self.limit = limit
        self._window_ms = max(1, round(window * 1000))
        self._clock = clock
        self._down_until: float | None = None
        self._version_key = version_key

    async def hit(self, client: str, *, version: bool = False) -> Verdict:
        """Count one request of ``client`` (``key:<id>`` or ``ip:<address>``); with
        ``version``, also read the data version in the same round trip."""
        version_key = self._version_key if version else None
        if self.limit <= 0 and version_key is None:
            return Verdict(True, 0, 0, 0)
        if self._down_until is not None and self._clock() < self._down_until:
            return Verdict(True, self.limit, self.limit, 0)
        keys = [KEY_PREFIX + client] if version_key is None else [KEY_PREFIX + client, version_key]
        try:
            if self.limit <= 0:
                current = await self._redis.get(keys[1])
                count, ttl_ms = 0, 0
            else:
                count, ttl_ms, current = await self._script(keys=keys, args=[self._window_ms])
        except (RedisError, OSError) as exc:
            if self._down_until is None:
                log.warning(
                    "api.ratelimit_unavailable reason=%s action=allow_requests",
                    type(exc).__name__,
                )
            self._down_until = self._clock() + OUTAGE_BACKOFF
            return Verdict(True, self.limit, self.limit, 0)
        if self._down_until is not None:
            log.info("api.ratelimit_restored")
            self._down_until = None
        seen = None if version_key is None else _bytes(current or b"0")
        if self.limit <= 0:
            return Verdict(True, 0, 0, 0, seen)
        count, ttl_ms = int(count), int(ttl_ms)
        return Verdict(
            allowed=count <= self.limit,
            limit=self.limit,
            remaining=max(0, self.limit - count),
            reset_after=max(1, math.ceil(ttl_ms / 1000)),
            version=seen,
        )


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
