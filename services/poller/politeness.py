"""Per-host politeness shared by every poller process: a concurrency cap and a minimum spacing.

State lives in Redis so that any number of pollers, on any number of hosts, treat a publisher
as one: at most ``concurrency`` requests in flight to a host, at least ``spacing`` seconds
between two request starts, and a host that answered 429/503 waits as a whole. Redis' own
clock (``TIME``) is used inside the scripts, so poller clocks need not agree.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

PREFIX = "newsdesk:host:"
# A slot is leased, not held forever: a poller that dies mid-request frees it on expiry.
SLOT_LEASE_MS = 120_000
# How often a request waiting for a full host looks again (slots free when requests end).
FULL_RETRY_MS = 25

# KEYS: slots zset, next-start key. ARGV: token, cap, spacing_ms, lease_ms, full_wait_ms.
# Returns 0 when the slot is taken, else milliseconds to wait before trying again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local next_start = tonumber(redis.call('GET', KEYS[2]) or '0')
if next_start > now then
  return next_start - now
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return tonumber(ARGV[5])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
local spacing = tonumber(ARGV[3])
if spacing > 0 then
  redis.call('SET', KEYS[2], now + spacing, 'PX', spacing + 1000)
end
return 0
"""

# KEYS: next-start key. ARGV: delay_ms. Pushes the host's next start at least delay_ms away.
_SLOW_DOWN = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local wanted = now + tonumber(ARGV[1])
local next_start = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > next_start then
  redis.call('SET', KEYS[1], wanted, 'PX', tonumber(ARGV[1]) + 1000)
end
return wanted
"""


class HostBusy(Exception):
    """The host cannot take a request within the wait allowed; retry after ``delay``."""

    def __init__(self, host: str, delay: float) -> None:
        super().__init__(f"{host} is busy for {delay:.1f}s")
        self.host = host
        self.delay = delay


@dataclass(frozen=True)
class HostPolicy:
    concurrency: int
    spacing: float


class Politeness:
    """Shared per-host gate. Use ``async with gate.slot(host, max_wait=...)``."""

    def __init__(self, client: aioredis.Redis, policy: HostPolicy) -> None:
        self._client = client
        self._policy = policy
        self._acquire = client.register_script(_ACQUIRE)
        self._slow = client.register_script(_SLOW_DOWN)

    @staticmethod
    def _keys(host: str) -> tuple[str, str]:
        host = host.lower()
        return f"{PREFIX}{host}:slots", f"{PREFIX}{host}:next"

    @asynccontextmanager
    async def slot(self, host: str, *, max_wait: float) -> AsyncIterator[None]:
        """Hold one of the host's request slots; raises HostBusy past ``max_wait`` seconds."""
        slots, next_key = self._keys(host)
        token = uuid.uuid4().hex
        waited = 0.0
        spacing_ms = int(self._policy.spacing * 1000)
        while True:
            wait_ms = int(
                await self._acquire(
                    keys=[slots, next_key],
                    args=[
                        token,
                        self._policy.concurrency,
                        spacing_ms,
                        SLOT_LEASE_MS,
                        FULL_RETRY_MS,
                    ],
                )
            )
            if wait_ms == 0:
                break
            if waited + wait_ms / 1000 > max_wait:
                raise HostBusy(host, wait_ms / 1000)
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
        try:
            yield
        finally:
            await self._client.zrem(slots, token)

    async def slow_down(self, host: str, delay: float) -> None:
        """No request to ``host`` from any poller for ``delay`` seconds (after a 429/503)."""
        _, next_key = self._keys(host)
        await self._slow(keys=[next_key], args=[max(1, int(delay * 1000))])
