"""Poller throughput: steady-state cycles of 304s, of unchanged 200s, and of new items.

A local HTTP server (its own process) plays back real feed captures for N feeds, each on its
own host name (``f<i>.bench.test``, resolved to 127.0.0.1 by a resolver handed to the
fetcher, so per-host politeness applies as in production). One poller process with the real
database, Redis, SSRF guard and politeness polls every feed once per measured cycle.

Reports feeds/s per cycle kind, the poller's peak RSS and the event loop's longest stall
(a 10 ms ticker's worst lateness), all measured in this run.

    python bench/poll.py --feeds 1000 10000            # SQLite + embedded Redis
    python bench/poll.py --feeds 10000 --phases prime 304 304 200 200   # steady state only

Repeat a phase to see the steady state: the first cycle after start-up also pays one-time
costs (first connection to each host, Redis scripts loading, cold SQLite pages).
    python bench/poll.py --database-url postgresql+psycopg://postgres@127.0.0.1/test \\
                         --redis-url redis://127.0.0.1:6379/11
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import resource
import socket
import sys
import time
from contextlib import AsyncExitStack, ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import insert, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scratch import scratch_environment  # noqa: E402

from services.config import Settings  # noqa: E402
from services.db.engine import make_engine, session_factory  # noqa: E402
from services.db.migrate import upgrade  # noqa: E402
from services.db.models import Feed  # noqa: E402
from services.fetch import Fetcher  # noqa: E402
from services.poller.politeness import HostPolicy, Politeness  # noqa: E402
from services.poller.role import run_loop  # noqa: E402
from services.poller.service import Poller  # noqa: E402
from services.procs import tune_gc  # noqa: E402
from services.queue import extract_queue  # noqa: E402

# Three successive captures of one real feed, taken minutes apart (tests/data/feeds/SOURCES.tsv).
CAPTURES = sorted((ROOT / "tests" / "data" / "feeds").glob("nytimes__20200517T*.xml"))


# -- the publisher (runs in its own process) -------------------------------------------------


def _serve(port: int) -> None:
    bodies = [p.read_bytes() for p in CAPTURES]
    tags = ['"' + hashlib.sha256(b).hexdigest()[:16] + '"' for b in bodies]
    state = {"mode": "304", "round": 0}

    async def feed(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        if state["mode"] == "new":
            k = (i + int(state["round"])) % len(bodies)
            return web.Response(body=bodies[k], content_type="application/rss+xml")
        if state["mode"] == "200" or request.headers.get("If-None-Match") != tags[0]:
            return web.Response(body=bodies[0], content_type="application/rss+xml",
                                headers={"ETag": tags[0]})  # fmt: skip
        return web.Response(status=304, headers={"ETag": tags[0]})

    async def mode(request: web.Request) -> web.Response:
        state["mode"] = request.match_info["mode"]
        state["round"] = int(state["round"]) + 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/f/{i}.xml", feed)
    app.router.add_post("/mode/{mode}", mode)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class BenchResolver(AbstractResolver):
    """Every ``*.bench.test`` name is 127.0.0.1 (the poller still dials through the guard)."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": 0}]  # fmt: skip

    async def close(self) -> None:
        return None


# -- measurement -----------------------------------------------------------------------------


class StallMonitor:
    """The event loop's worst lateness, seen by a task that wants to wake every 10 ms."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - before - 0.01)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prime(engine: Any) -> None:
    """Store what a first poll of the 304/200 capture leaves behind (validators, body hash),
    so the steady-state phases can be measured without the slow first phase ("prime")."""
    body = CAPTURES[0].read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    with engine.begin() as conn:
        conn.execute(update(Feed).values(etag='"' + digest[:16] + '"', body_hash=digest))


def _make_all_due(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(Feed).values(next_poll_at=datetime(2000, 1, 1, tzinfo=UTC)))


async def _cycle(poller: Poller, n: int) -> tuple[float, int]:
    """Poll until every (due) feed was polled once; (seconds, feeds polled)."""
    polled = 0
    started = time.perf_counter()
    while polled < n:
        stats = await poller.run_once(datetime.now(UTC))
        if stats.feeds_polled == 0:
            break
        polled += stats.feeds_polled
    return time.perf_counter() - started, polled


PHASES = {
    "first": ("first poll (200, parse, enqueue)", "304"),
    "304": ("steady 304", "304"),
    "200": ("unchanged 200", "200"),
    "new": ("new items (parse + enqueue)", "new"),
}


async def _bench_size(settings: Settings, n: int, port: int, phases: list[str]) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM feeds"))
        now = datetime.now(UTC)
        rows = [{"url": f"http://f{i}.bench.test:{port}/f/{i}.xml", "kind": "http",
                 "interval_seconds": 900, "next_poll_at": now, "error_count": 0,
                 "created_at": now, "updated_at": now} for i in range(n)]  # fmt: skip
        conn.execute(insert(Feed), rows)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    results: dict[str, Any] = {"feeds": n}
    monitor = StallMonitor()
    async with AsyncExitStack() as stack:
        fetcher = await stack.enter_async_context(Fetcher(settings, resolver=BenchResolver()))
        aclient = aioredis.Redis.from_url(settings.redis_url)
        stack.push_async_callback(aclient.aclose)
        gate = Politeness(aclient, HostPolicy(settings.host_concurrency, settings.host_spacing))
        poller = Poller(settings, sessions=session_factory(engine),
                        queue=extract_queue(settings, client), fetcher=fetcher,
                        politeness=gate)  # fmt: skip
        tune_gc()  # as `newsdesk poller` does once it is set up
        for run, phase in enumerate(phases, 1):
            if phase == "prime":
                _prime(engine)
                continue
            label, mode = PHASES[phase]
            await asyncio.to_thread(_set_mode, port, mode)
            client.flushdb()
            _make_all_due(engine)
            monitor.start()
            seconds, polled = await _cycle(poller, n)
            monitor.stop()
            results[f"{run}. {label}"] = (polled / seconds, monitor.worst * 1000, polled)
    client.close()
    engine.dispose()
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def _set_mode(port: int, mode: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/mode/{mode}",
                                                  method="POST"), timeout=5).read()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--phases", nargs="+", choices=[*PHASES, "prime"],
                        default=["first", "304", "200", "new"])  # fmt: skip
    args = parser.parse_args()
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,),
                                                          daemon=True)  # fmt: skip
    server.start()
    with ExitStack() as stack:
        _, env = scratch_environment(
            stack, database_url=args.database_url, redis_url=args.redis_url,
            NEWSDESK_FETCH_ALLOW="127.0.0.1/32", NEWSDESK_QUEUE_HIGH_WATER="100000000",
            NEWSDESK_LOG_LEVEL="WARNING",
        )  # fmt: skip
        settings = Settings.from_env(env)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        engine.dispose()
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        backend = settings.database_url.split(":", 1)[0]
        cpus = multiprocessing.cpu_count()
        print(f"poller bench: backend={backend} captures={len(CAPTURES)} cpus={cpus}")
        for n in args.feeds:
            res = run_loop(_bench_size(settings, n, port, args.phases))
            print(f"\nN = {n} feeds (peak RSS so far {res.pop('peak_rss_mb'):.0f} MB)")
            res.pop("feeds")
            for label, (rate, stall, polled) in res.items():
                print(f"  {label:40s} {rate:8.0f} feeds/s   loop stall max {stall:6.1f} ms"
                      f"   ({polled} polled)")  # fmt: skip
    server.terminate()


if __name__ == "__main__":
    main()
