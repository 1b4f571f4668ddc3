"""Per-client request budgets kept in Redis, shared by every API process.

A fixed window: the first request of a client starts a window of ``window`` seconds and a
counter that expires with it; one Lua script counts and reads the remaining time in a single
round trip. A client can spend at most twice the budget across a window boundary, which is
acceptable for a guard against runaway clients (not a billing meter).

When Redis does not answer, requests are let through (fail open) and one warning is logged per
outage: the API's reads come from SQL and must not stop with Redis. During an outage Redis is
not asked again for a few seconds, so a hung Redis adds no latency to every request.
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

# KEYS[1]: the client's counter; ARGV[1]: window in milliseconds. Returns {count, ms left}.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    # Whole seconds until the window ends (what Retry-After says when not allowed).
    reset_after: int


class RateLimiter:
    """``limit`` requests per ``window`` seconds per client id; ``limit`` 0 allows everything."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self.limit = limit
        self._window_ms = max(1, round(window * 1000))
        self._clock = clock
        self._down_until: float | None = None

    async def hit(self, client: str) -> Verdict:
        """Count one request of ``client`` (``key:<id>`` or ``ip:<address>``)."""
        if self.limit <= 0:
            return Verdict(True, 0, 0, 0)
        if self._down_until is not None and self._clock() < self._down_until:
            return Verdict(True, self.limit, self.limit, 0)
        try:
            count, ttl_ms = await self._script(keys=[KEY_PREFIX + client], args=[self._window_ms])
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
        count, ttl_ms = int(count), int(ttl_ms)
        return Verdict(
            allowed=count <= self.limit,
            limit=self.limit,
            remaining=max(0, self.limit - count),
            reset_after=max(1, math.ceil(ttl_ms / 1000)),
        )
