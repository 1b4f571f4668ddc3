"""End-to-end benchmark: how much news one machine absorbs, measured against its ceiling.

A loopback HTTP server plays feeds built from real texts (the paragraphs and headlines of the
captures in ``tests/data/feeds``, recombined per article as in ``bench/extract.py``): each
feed is summary-only RSS whose first poll carries the first half of its items and later
polls all of them (successive captures), and each item's link serves the article page, so
the poller fetches pages for full text. A known share of the items are copies of another
feed's article under the copying feed's own link (cross-feed duplicates: the same page text).
A loopback webhook receiver serves ``--subscriptions`` subscriptions.

The real roles run as separate processes (``newsdesk api``, ``poller``, ``worker`` with
``--workers`` processes, ``dispatcher``, ``deliver``) against PostgreSQL + Redis, or with
``--embedded`` against SQLite + an embedded Redis, as ``newsdesk up`` would. Reported:

- distinct articles stored per second while the workers are saturated (extraction jobs
  waiting in the queue), and the ceiling measured in the same run: ``--workers`` processes
  each loading the same model (NER only) and doing only extraction + NER on the same
  distinct articles' payloads; their ratio (target >= 85%);
- latency from the poll that first saw an item (the feed server served it) to the article
  being listed by the API and to each subscriber receiving its webhook: p50 / p95 / max
  (target p95 < 5 s when not saturated: run with ``--trickle``);
- peak resident memory per role (VmHWM) and the RSS of each role at the start and end of
  the run (flat memory over a long run: ``--duration 600 --trickle``);
- the duplicate rate observed (1 - stored / items) against the known one.

    python bench/pipeline.py --feeds 40 --items 25          # quick, PostgreSQL + Redis
    python bench/pipeline.py                                # 200 feeds x 50 items
    python bench/pipeline.py --embedded                     # SQLite + embedded Redis
    python bench/pipeline.py --trickle --duration 600       # unsaturated latency, memory

PostgreSQL: ``--database-url`` (default ``postgresql+psycopg://postgres@127.0.0.1/bench_pipeline``,
created and emptied by the run); Redis: ``--redis-url`` (default db 4 on 127.0.0.1:6379,
flushed by the run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import redis
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from extract import paragraph_pool  # noqa: E402

from services.queue import RESULT_TTL  # noqa: E402
from tests import pages as real  # noqa: E402

PARAGRAPHS = 6


# -- the played-back world --------------------------------------------------------------------


@dataclass
class World:
    """Feeds, their items and pages, and what the feed server and receiver saw."""

    feeds: int
    items: int
    dup_rate: float
    base: str = ""
    articles: list[real.Article] = field(default_factory=list)
    # (feed, item) -> index into articles
    slots: dict[tuple[int, int], int] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)  # item URL -> first served
    requests: dict[int, int] = field(default_factory=dict)  # feed -> documents served
    hooks: list[tuple[str, str, float]] = field(default_factory=list)  # (sub, url, time)
    hook_ids: set[tuple[str, str]] = field(default_factory=set)
    trickle: bool = False
    started: float = 0.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: Any = None
    rss: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    redis_mb: list[float] = field(default_factory=list)  # Redis used_memory, each sample

    def build(self, seed: int = 7) -> None:
        pool, headlines = paragraph_pool()
        total = self.feeds * self.items
        copies = round(total * self.dup_rate)
        distinct = total - copies
        for k in range(distinct):
            rng = random.Random(f"{seed}-{k}")
            self.articles.append(
                real.Article(rng.choice(headlines), tuple(rng.sample(pool, PARAGRAPHS)))
            )
        slots = [(f, i) for f in range(self.feeds) for i in range(self.items)]
        rng = random.Random(seed)
        copy_slots = set(rng.sample(range(total), copies))
        k = 0
        for n, slot in enumerate(slots):
            if n in copy_slots:
                continue
            self.slots[slot] = k
            k += 1
        for n in sorted(copy_slots):
            f, i = slots[n]
            # A copy of an article first carried by another feed.
            while True:
                other = rng.randrange(distinct)
                owner = next(s for s, a in self.slots.items() if a == other)
                if owner[0] != f:
                    break
            self.slots[(f, i)] = other

    @property
    def distinct(self) -> int:
        return len(self.articles)

    def url(self, f: int, i: int) -> str:
        return f"{self.base}/f{f}/a{i}"

    def visible(self, f: int) -> range:
        """Items in the next feed document: half before the first full answer, all after
        (in trickle mode one more item per answer, so the pipeline is never saturated)."""
        served = self.requests.get(f, 0)
        if self.trickle:
            return range(min(self.items, 1 + served))
        return range(self.items // 2 if served == 0 else self.items)

    def document(self, f: int) -> tuple[bytes, str]:
        items = []
        now = time.monotonic()
        for i in reversed(self.visible(f)):
            article = self.articles[self.slots[(f, i)]]
            link = self.url(f, i)
            self.seen_at.setdefault(link, now)
            published = format_datetime(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=i))
            items.append(
                f"<item><title>{html.escape(article.title)}</title><link>{link}</link>"
                f'<guid isPermaLink="false">f{f}-a{i}</guid>'
                f"<description>{html.escape(article.paragraphs[0])}</description>"
                f"<pubDate>{published}</pubDate></item>"
            )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Bench feed {f}</title><link>{self.base}/</link>"
            f"<description>bench</description>{''.join(items)}</channel></rss>"
        ).encode()
        return body, hashlib.sha256(body).hexdigest()[:16]


async def serve_feed(request: web.Request) -> web.Response:
    world: World = request.app["world"]
    f = int(request.match_info["feed"])
    body, etag = world.document(f)
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})
    world.requests[f] = world.requests.get(f, 0) + 1
    return web.Response(
        body=body, headers={"ETag": f'"{etag}"', "Content-Type": "application/rss+xml"}
    )


async def serve_page(request: web.Request) -> web.Response:
    world: World = request.app["world"]
    f, i = int(request.match_info["feed"]), int(request.match_info["item"])
    article = world.articles[world.slots[(f, i)]]
    page = real.article_page(article, canonical=world.url(f, i))
    return web.Response(text=page, content_type="text/html")


async def receive_hook(request: web.Request) -> web.Response:
    world: World = request.app["world"]
    body = await request.json()
    if body.get("type") == "article.created":
        url = body["data"]["article"]["url"]
        key = (request.match_info["sub"], request.headers.get("webhook-id", ""))
        if key not in world.hook_ids:
            world.hook_ids.add(key)
            world.hooks.append((request.match_info["sub"], url, time.monotonic()))
    return web.Response(status=204)


# -- the roles as processes -------------------------------------------------------------------


def newsdesk(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args], env=env, stdout=out, stderr=out,
        start_new_session=True,
    )  # fmt: skip


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def memory(pid: int, field_name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its reaped children excluded)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def named_pids(name: str) -> list[int]:
    """Processes whose command starts with ``name`` (the database and Redis servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(name):
                found.append(int(entry.name))
    return found


def cpu_by_role(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of each role, of the database and Redis servers, and of this
    process (feed server, receiver and API sampler)."""
    found = {r: sum(cpu_seconds(p) for p in ps) for r, ps in role_pids(procs).items()}
    found["postgres"] = sum(cpu_seconds(p) for p in named_pids("postgres"))
    found["redis-server"] = sum(cpu_seconds(p) for p in named_pids("redis-server"))
    found["bench"] = sum(os.times()[:2])
    return found


def role_pids(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, list[int]]:
    """Each role's processes: the supervisor's children where it has them."""
    return {role: children(p.pid) or [p.pid] for role, p in procs.items()}


# -- the ceiling ------------------------------------------------------------------------------


def _ceiling_part(
    payloads: list[dict[str, Any]], batch: int, ready: Any, go: Any, out: Any
) -> None:
    from services.core.extract import ItemPayload, extract
    from workers.nlp import Recogniser, load_model

    recogniser = Recogniser(load_model())
    recogniser.recognise("Warm-up sentence about Joe Biden in Washington.")
    ready.wait()
    go.wait()
    started = time.perf_counter()
    for start in range(0, len(payloads), batch):
        chunk = payloads[start : start + batch]
        recogniser.recognise_many([extract(ItemPayload.from_dict(p)).analysed_text for p in chunk])
    out.put(time.perf_counter() - started)


def ceiling(payloads: list[dict[str, Any]], processes: int, batch: int) -> float:
    """Articles/s of extraction + NER alone on ``payloads``, split over ``processes``, NER
    taking ``batch`` texts per ``nlp.pipe`` call as the workers do (``NEWSDESK_WORKER_BATCH``)."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Barrier(processes + 1), ctx.Event(), ctx.Queue()
    parts = [payloads[n::processes] for n in range(processes)]
    procs = [ctx.Process(target=_ceiling_part, args=(p, batch, ready, go, out)) for p in parts]
    for p in procs:
        p.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    for _ in procs:
        out.get()
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return len(payloads) / elapsed


def ceiling_payloads(world: World) -> list[dict[str, Any]]:
    """The payloads the poller builds for each distinct article's first item."""
    from services.poller.payloads import feed_payload
    from services.sources.feed import parse_feed

    firsts: dict[int, tuple[int, int]] = {}
    for slot, k in sorted(world.slots.items()):
        firsts.setdefault(k, slot)
    documents: dict[int, dict[str, Any]] = {}
    found = []
    for k, (f, i) in sorted(firsts.items()):
        if f not in documents:
            saved = world.requests.get(f, 0)
            world.requests[f] = 1  # the full document
            body, _ = world.document(f)
            world.requests[f] = saved
            parsed = parse_feed(body, url=f"{world.base}/feed/{f}")
            documents[f] = {item.url or "": item for item in parsed.items}
        item = documents[f][world.url(f, i)]
        page = real.article_page(world.articles[k], canonical=world.url(f, i))
        found.append(feed_payload(f, item, page_html=page, page_url=world.url(f, i)))
    return found


# -- the run ----------------------------------------------------------------------------------


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s"


async def run(args: argparse.Namespace) -> None:
    world = World(args.feeds, args.items, args.dup_rate, trickle=args.trickle)
    world.build()
    print(
        f"pipeline bench: {args.feeds} feeds x {args.items} items = {args.feeds * args.items} "
        f"items, {world.distinct} distinct articles (known duplicate rate "
        f"{1 - world.distinct / (args.feeds * args.items):.1%}), workers={args.workers}, "
        f"subscriptions={args.subscriptions}, cpus={os.cpu_count()}, "
        f"backend={'sqlite+embedded' if args.embedded else 'postgresql+redis'}",
        flush=True,
    )
    app = web.Application()
    app["world"] = world
    app.router.add_get("/feed/{feed}", serve_feed)
    app.router.add_get("/f{feed}/a{item}", serve_page)
    app.router.add_post("/hook/{sub}", receive_hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    world.base = f"http://127.0.0.1:{port}"

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = environment(args, tmp, stack)
        log = tmp / "roles.log"
        subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        token = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "create", "--name", "bench",
             "--scope", "read", "--scope", "write"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        api_port = int(env["NEWSDESK_API_PORT"])
        procs = {"api": newsdesk(["api"], env, log)}
        stack.callback(stop_all, procs)
        api = f"http://127.0.0.1:{api_port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            await wait_ready(http, api)
            for n in range(args.subscriptions):
                resp = await http.post(f"{api}/v1/subscriptions",
                                       json={"url": f"{world.base}/hook/s{n}"})  # fmt: skip
                assert resp.status == 201, await resp.text()
            async with http.post(f"{api}/v1/feeds.opml", data=opml(world),
                                 headers={"Content-Type": "text/x-opml"}) as resp:  # fmt: skip
                assert resp.status in (200, 201), await resp.text()
            procs["worker"] = newsdesk(["worker", "--workers", str(args.workers)], env, log)
            procs["dispatcher"] = newsdesk(["dispatcher"], env, log)
            procs["deliver"] = newsdesk(["deliver"], env, log)
            await asyncio.sleep(args.warmup)  # models loaded before the first poll
            rss_start = {r: sum(memory(p, "VmRSS") for p in ps)
                         for r, ps in role_pids(procs).items()}  # fmt: skip
            world.redis = redis.Redis.from_url(env["REDIS_URL"])
            world.started = time.monotonic()
            procs["poller"] = newsdesk(["poller"], env, log)
            world.procs = procs
            cpu_start = cpu_by_role(procs)
            listed, counts = await sample_api(http, api, world, args)
            cpu_end = cpu_by_role(procs)
        pids = role_pids(procs)
        peaks = {r: max((memory(p, "VmHWM") for p in ps), default=0.0) for r, ps in pids.items()}
        rss_end = {r: sum(memory(p, "VmRSS") for p in ps) for r, ps in pids.items()}
        stop_all(procs)
        await runner.cleanup()
        cpu = {r: cpu_end[r] - cpu_start.get(r, 0.0) for r in cpu_end}
        report(world, args, listed, counts, peaks, rss_start, rss_end, log)
        wall = time.monotonic() - world.started
        total = sum(cpu.values())
        print(f"  CPU seconds over the {wall:.0f} s run ({total:.0f} s of "
              f"{wall * (os.cpu_count() or 1):.0f} available):")  # fmt: skip
        for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"    {role:12s} {seconds:7.1f} s  {seconds / total:6.1%}")


def environment(args: argparse.Namespace, tmp: Path, stack: ExitStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDESK_", "DATABASE_URL",
                                                                   "REDIS_URL"))}  # fmt: skip
    if args.embedded:
        from services.embedded_redis import EmbeddedRedis

        redis_url = stack.enter_context(EmbeddedRedis(tmp / "redis", persistent=True)).url
        database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    else:
        from sqlalchemy import create_engine, text

        database_url, redis_url = args.database_url, args.redis_url
        admin = create_engine(database_url.rsplit("/", 1)[0] + "/postgres",
                              isolation_level="AUTOCOMMIT")  # fmt: skip
        name = database_url.rsplit("/", 1)[1]
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        redis.Redis.from_url(redis_url).flushdb()
    return env | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "NEWSDESK_DATA_DIR": str(tmp),
        "NEWSDESK_SEEDS_DIR": "",
        "NEWSDESK_API_PORT": str(free_port()),
        "NEWSDESK_WORKERS": str(args.workers),
        "NEWSDESK_LOG_LEVEL": "WARNING",
        "NEWSDESK_LOG_FORMAT": "text",
        "NEWSDESK_FETCH_ALLOW": "127.0.0.0/8",
        # Every feed and page lives on one loopback host: politeness would serialise them.
        "NEWSDESK_HOST_CONCURRENCY": "64",
        "NEWSDESK_HOST_SPACING": "0",
        "NEWSDESK_FEED_INTERVAL": str(args.interval),
        "NEWSDESK_FEED_MIN_INTERVAL": str(int(args.interval)),
        "NEWSDESK_FEED_MAX_INTERVAL": str(int(args.interval)),
        "NEWSDESK_POLL_TICK": "0.5",
        "NEWSDESK_RATE_LIMIT": "1000000",
        "NEWSDESK_WEBHOOK_TICK": "0.2",
        "NEWSDESK_QUEUE_HIGH_WATER": "100000",
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opml(world: World) -> bytes:
    outlines = "".join(
        f'<outline type="rss" text="bench {f}" xmlUrl="{world.base}/feed/{f}"/>'
        for f in range(world.feeds)
    )
    return f'<?xml version="1.0"?><opml version="2.0"><body>{outlines}</body></opml>'.encode()


async def wait_ready(http: aiohttp.ClientSession, api: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{api}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("the API did not become ready")


async def sample_api(
    http: aiohttp.ClientSession, api: str, world: World, args: argparse.Namespace
) -> tuple[dict[str, float], list[tuple[float, int, int]]]:
    """Poll the API's newest articles until the run ends: first listing time per URL, and
    (time, stored count, extraction queue depth) samples."""
    listed: dict[str, float] = {}
    counts: list[tuple[float, int, int]] = []
    last_change = time.monotonic()
    next_rss = 0.0
    expected_hooks = world.distinct * args.subscriptions
    while True:
        now = time.monotonic()
        async with http.get(f"{api}/v1/articles", params={"limit": "200"}) as resp:
            page = await resp.json()
        for article in page["data"]:
            listed.setdefault(article["url"], now)
        async with http.get(f"{api}/metrics") as resp:
            metrics = await resp.text()
        stored = int(_metric(metrics, "newsdesk_articles"))
        depth = int(_metric(metrics, 'newsdesk_queue_depth{queue="newsdesk-extract"}'))
        if not counts or stored != counts[-1][1]:
            last_change = now
        counts.append((now, stored, depth))
        world.redis_mb.append(redis_used_mb(world.redis))
        if now >= next_rss:  # each role's resident memory, once a minute
            next_rss = now + 60
            for role, pids in role_pids(world.procs).items():
                world.rss[role].append(sum(memory(p, "VmRSS") for p in pids))
        done = stored >= world.distinct and len(world.hooks) >= expected_hooks
        if args.duration:
            done = now - world.started >= args.duration
        if done or now - last_change > args.stall:
            return listed, counts
        await asyncio.sleep(0.25)


def redis_used_mb(conn: Any) -> float:
    """The Redis server's ``used_memory`` (all of it: the bench's database is the busy one)."""
    return float(conn.info("memory")["used_memory"]) / 2**20


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def report(
    world: World, args: argparse.Namespace, listed: dict[str, float],
    counts: list[tuple[float, int, int]], peaks: dict[str, float], rss_start: dict[str, float],
    rss_end: dict[str, float], log: Path,
) -> None:  # fmt: skip
    final = counts[-1][1] if counts else 0
    items = args.feeds * args.items
    # Saturated time: sampling intervals that began with extraction jobs waiting, so idle
    # gaps between polls do not count against the workers.
    busy = stored_busy = 0.0
    for (t0, c0, d0), (t1, c1, _) in pairwise(counts):
        if d0 > 0:
            busy += t1 - t0
            stored_busy += c1 - c0
    stored_rate = stored_busy / busy if busy else 0.0
    rate = f"{stored_rate:.1f} articles/s over {busy:.0f} s" if busy else "n/a"
    print(f"  stored: {final} of {world.distinct} distinct articles; items served "
          f"{len(world.seen_at)} of {items}")  # fmt: skip
    print(f"  duplicate rate: observed {1 - final / items:.1%}, known "
          f"{1 - world.distinct / items:.1%}")  # fmt: skip
    print(f"  throughput while extraction jobs were waiting: {rate}", flush=True)
    api_lat = [listed[u] - world.seen_at[u] for u in listed if u in world.seen_at]
    hook_lat = [t - world.seen_at[u] for _, u, t in world.hooks if u in world.seen_at]
    print(f"  poll -> listed by the API ({len(api_lat)}): {percentiles(api_lat)}")
    print(f"  poll -> webhook received ({len(hook_lat)} deliveries): {percentiles(hook_lat)}")
    if world.redis_mb:
        print(f"  memory Redis used_memory start {world.redis_mb[0]:6.0f} MB, peak "
              f"{max(world.redis_mb):6.0f} MB, end {world.redis_mb[-1]:6.0f} MB "
              f"(finished jobs keep their payload for {RESULT_TTL} s)")  # fmt: skip
    for role in peaks:
        print(f"  memory {role:10s} peak {peaks[role]:6.0f} MB   RSS start "
              f"{rss_start.get(role, 0):6.0f} MB, end {rss_end[role]:6.0f} MB")  # fmt: skip
        if len(world.rss[role]) > 2:
            print(f"         {'':10s} RSS each minute: "
                  + ", ".join(f"{v:.0f}" for v in world.rss[role]))  # fmt: skip
    if args.no_ceiling:
        return
    payloads = ceiling_payloads(world)
    from services.config import Settings

    batch = Settings.from_env(dict(os.environ)).worker_batch
    top = ceiling(payloads, args.workers, batch)
    print(f"  ceiling: extract + NER (batches of {batch} texts, as the workers) in "
          f"{args.workers} processes on the same {len(payloads)} distinct articles: "
          f"{top:.1f} articles/s")  # fmt: skip
    if stored_rate:
        print(f"  ratio stored / ceiling: {stored_rate / top:.1%} (target >= 85%)")
    errors = [ln for ln in log.read_text(errors="replace").splitlines()
              if " ERROR " in ln or "Traceback" in ln]  # fmt: skip
    print(f"  role log: {len(errors)} error lines" + (f"; first: {errors[0]}" if errors else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--dup-rate", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--interval", type=float, default=30.0,
                        help="feed poll interval, seconds (default 30)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--stall", type=float, default=60.0,
                        help="stop when nothing was stored for this long")  # fmt: skip
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="run this long (seconds) instead of until everything is stored",
    )
    parser.add_argument(
        "--trickle",
        action="store_true",
        help="each poll of a feed adds one item (an unsaturated pipeline)",
    )
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/bench_pipeline"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
