"""Webhook delivery speed: event commit -> receiver, with 1, 10 and 100 subscriptions.

Runs the real roles as processes (`newsdesk dispatcher`, `newsdesk deliver`) against a
throwaway SQLite + embedded Redis (or DATABASE_URL / REDIS_URL), and a local aiohttp receiver
answering 204 at once. For each subscription count it measures:

- latency: events committed one at a time (idle pipeline), from the commit returning to the
  receiver getting the POST: p50, p95, max;
- throughput: a burst of events, deliveries/s from the first commit to the last receipt. The
  burst commits ``--per-commit`` events a transaction (one a transaction caps the rate at
  what the bench itself can commit, about 180/s on PostgreSQL here); the line shows that
  rate too ("events committed at");
- CPU per delivery during the burst, in ms: the delivery processes (supervisor and children,
  user + system time from /proc) and the dispatcher, each divided by the burst's deliveries;
  on a local PostgreSQL also its backends serving the bench's database (the bench's own
  event inserts included).

    python bench/webhooks.py [--events 20] [--burst-deliveries 2000] [--workers 4]
                             [--per-commit 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from rq import Worker
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_scratch import scratch_environment
from services.config import Settings
from services.db import events, subscriptions
from services.db.engine import make_engine, session_factory, transaction
from services.db.migrate import upgrade
from services.queue import redis_client, webhook_queue
from services.webhooks.filters import Filters
from services.webhooks.signing import new_secret


class Receiver:
    """Records (webhook-id, path) -> wall-clock arrival time; answers 204."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, str], float] = {}
        self.loop = asyncio.new_event_loop()
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrivals[(request.headers["webhook-id"], request.path)] = time.time()
        return web.Response(status=204)

    def start(self) -> None:
        async def boot() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(boot(), self.loop).result(10)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and every live descendant (/proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields are counted after its closing ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def backend_seconds(engine: Engine) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the engine's database, where
    /proc shows them (a local server); empty on SQLite."""
    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        found = {}
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(pid)] = (int(fields[11]) + int(fields[12])) / TICKS
        return found


class CpuMeter:
    """CPU seconds used by the role processes (and the database's backends) between
    ``start()`` and ``stop()``."""

    def __init__(self, roles: dict[str, int], engine: Engine) -> None:
        self.roles = roles
        self.engine = engine
        self.started: dict[str, float] = {}
        self.backends: dict[int, float] = {}

    def start(self) -> None:
        self.started = {name: cpu_seconds(pid) for name, pid in self.roles.items()}
        self.backends = backend_seconds(self.engine)

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self.started[name] for name, pid in self.roles.items()}
        backends = backend_seconds(self.engine)
        if backends:
            # A backend that ended meanwhile is missed; one that started is counted whole.
            used["postgres"] = sum(t - self.backends.get(pid, 0.0) for pid, t in backends.items())
        return used


def wait_for_workers(settings: Settings, timeout: float = 120) -> None:
    """Until every delivery process listens on the queue (spawning them takes seconds)."""
    connection = redis_client(settings)
    queue = webhook_queue(settings, connection)
    deadline = time.monotonic() + timeout
    while Worker.count(queue=queue) < settings.webhook_workers:
        if time.monotonic() > deadline:
            raise SystemExit("the delivery processes did not start")
        time.sleep(0.2)
    time.sleep(1)  # the dispatcher's first ticks
    connection.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def add_events(db: object, numbers: range) -> tuple[list[int], float]:
    """Commit one event per number in one transaction; returns their ids and the commit time."""
    with transaction(db) as s:  # type: ignore[arg-type]
        ids = [
            events.add_event(s, type="article.created", now=datetime.now(UTC), payload={
                "version": 1, "article": {"id": n, "title": f"Article {n}", "summary": "x" * 400},
            })
            for n in numbers
        ]  # fmt: skip
    return ids, time.time()


def add_event(db: object, n: int) -> tuple[int, float]:
    ids, committed = add_events(db, range(n, n + 1))
    return ids[0], committed


def wait_for(receiver: Receiver, expected: set[tuple[str, str]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not expected <= receiver.arrivals.keys():
        if time.monotonic() > deadline:
            missing = len(expected - receiver.arrivals.keys())
            raise SystemExit(f"{missing} deliveries did not arrive within {timeout} s")
        time.sleep(0.005)


def run_round(
    db: object, receiver: Receiver, subs: int, args: argparse.Namespace, meter: CpuMeter
) -> str:
    with transaction(db) as s:  # type: ignore[arg-type]
        for i in range(subs):
            subscriptions.create_subscription(
                s, url=f"http://127.0.0.1:{receiver.port}/s/{subs}/{i}", description=None,
                event_types=("article.created",), filters=Filters(), secret=new_secret(),
                now=datetime.now(UTC),
            )  # fmt: skip
    paths = [f"/s/{subs}/{i}" for i in range(subs)]
    latencies: list[float] = []
    for n in range(args.events):
        event_id, committed = add_event(db, n)
        expected = {(str(event_id), p) for p in paths}
        wait_for(receiver, expected, 30)
        latencies += [receiver.arrivals[k] - committed for k in expected]
        time.sleep(0.05)
    count = max(1, args.burst_deliveries // subs)
    meter.start()
    started = time.time()
    expected = set()
    for n in range(0, count, args.per_commit):
        ids, committed = add_events(db, range(10_000 + n, 10_000 + min(count, n + args.per_commit)))
        expected |= {(str(event_id), p) for event_id in ids for p in paths}
    produced = count / max(committed - started, 1e-6)
    wait_for(receiver, expected, 300)
    last = max(receiver.arrivals[k] for k in expected)
    time.sleep(0.5)  # the last results are recorded after their receipt
    cpu = meter.stop()
    rate = len(expected) / (last - started)
    with transaction(db) as s:  # type: ignore[arg-type]
        for sub in subscriptions.list_subscriptions(s, after_id=0, limit=1000):
            subscriptions.update_subscription(s, sub.id, now=datetime.now(UTC), enabled=False)
    ms = [v * 1000 for v in latencies]
    return (
        f"{subs:>4} subscriptions  latency p50 {statistics.median(ms):6.1f} ms  "
        f"p95 {pct(ms, 0.95):6.1f} ms  max {max(ms):6.1f} ms  (n={len(ms)})  "
        f"burst {len(expected)} deliveries: {rate:6.0f}/s "
        f"(events committed at {produced:.0f}/s)  CPU ms/delivery: "
        + "  ".join(f"{name} {cpu[name] * 1000 / len(expected):.2f}" for name in cpu)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--burst-deliveries", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--per-commit", type=int, default=20)
    args = parser.parse_args()
    with ExitStack() as stack:
        _, env = scratch_environment(
            stack,
            database_url=os.environ.get("DATABASE_URL"),
            redis_url=os.environ.get("REDIS_URL"),
            NEWSDESK_FETCH_ALLOW="127.0.0.1/32",
            NEWSDESK_WEBHOOK_WORKERS=str(args.workers),
            NEWSDESK_LOG_LEVEL="WARNING",
        )
        settings = Settings.from_env(env)
        engine = make_engine(settings.database_url)
        upgrade(engine)
        db = session_factory(engine)
        receiver = Receiver()
        receiver.start()
        child_env = os.environ | env
        procs = {
            role: subprocess.Popen([sys.executable, "-m", "services.cli", role], env=child_env)
            for role in ("dispatcher", "deliver")
        }
        meter = CpuMeter({role: proc.pid for role, proc in procs.items()}, engine)
        try:
            wait_for_workers(settings)
            print(f"workers={args.workers} tick={settings.webhook_tick}s "
                  f"concurrency/subscription={settings.webhook_concurrency} "
                  f"database={settings.database_url.split(':')[0]}")  # fmt: skip
            for size in (int(s) for s in args.sizes.split(",")):
                print(run_round(db, receiver, size, args, meter), flush=True)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(30)
            engine.dispose()


if __name__ == "__main__":
    main()
