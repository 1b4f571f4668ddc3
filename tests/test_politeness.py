"""Per-host politeness on real Redis, shared between two poller processes' clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.config import Settings
from services.poller.politeness import HostBusy, HostPolicy, Politeness


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(settings.redis_url) for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


async def test_concurrency_cap_holds_across_two_pollers(clients: list[aioredis.Redis]) -> None:
    gates = [Politeness(c, HostPolicy(concurrency=2, spacing=0)) for c in clients]
    in_flight = peak = 0

    async def request(gate: Politeness) -> None:
        nonlocal in_flight, peak
        async with gate.slot("news.example", max_wait=10):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1

    await asyncio.gather(*(request(gates[i % 2]) for i in range(10)))
    assert peak == 2


async def test_minimum_spacing_between_request_starts(clients: list[aioredis.Redis]) -> None:
    gates = [Politeness(c, HostPolicy(concurrency=5, spacing=0.2)) for c in clients]
    starts: list[float] = []

    async def request(gate: Politeness) -> None:
        async with gate.slot("news.example", max_wait=10):
            starts.append(time.monotonic())

    await asyncio.gather(*(request(gates[i % 2]) for i in range(4)))
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert len(gaps) == 3
    assert min(gaps) >= 0.18


async def test_a_throttled_host_waits_as_a_whole(clients: list[aioredis.Redis]) -> None:
    first, second = (Politeness(c, HostPolicy(concurrency=2, spacing=0)) for c in clients)
    await first.slow_down("slow.example", 30)
    with pytest.raises(HostBusy) as busy:
        async with second.slot("slow.example", max_wait=1):
            pass
    assert 25 < busy.value.delay <= 30
    async with second.slot("other.example", max_wait=0.1):
        pass  # other hosts are not affected


async def test_slots_are_released(clients: list[aioredis.Redis]) -> None:
    gate = Politeness(clients[0], HostPolicy(concurrency=1, spacing=0))
    for _ in range(5):
        async with gate.slot("one.example", max_wait=0.1):
            pass
