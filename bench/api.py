"""API read speed on 100,000 articles: three routes over HTTP next to two baselines.

Routes: ``GET /v1/articles?limit=50``, the same filtered by a common entity, and a full-text
query. Baselines measured in the same run: ``/healthz`` (the app's trivial JSON endpoint, the
cost of HTTP, auth-free routing and the load generator) and a bare loop that runs each route's
repository calls and JSON encoding in one thread without HTTP. The API runs as the real server
(``newsdesk api`` subprocess, authentication and the Redis rate limit on), once per count of
server processes in ``--processes`` (1 and 2 by default: ``newsdesk api --processes N``), and
a local aiohttp load generator keeps ``--clients`` requests in flight for ``--seconds`` per
route. The load generator shares the machine's CPUs with the server processes. It also
prints the query plan of every SQL statement each route runs and flags full scans of big
tables.

``--cache on`` (the default) runs the server with its response cache; each route's load
repeats one URL, the dashboard case of many clients polling the same page, so nearly every
request is answered from the cache (nothing writes during the run: an entry is rebuilt when
it expires, every ``NEWSDESK_API_CACHE_SECONDS``) and the figures measure the gate, its Redis
round trip and the cached answer, not SQL; the bare loop ratio then exceeds 100%.
``--cache off`` (``NEWSDESK_API_CACHE_MB=0``) measures the uncached path: every request reads
SQL.

The dataset is synthetic but made of real text: titles and paragraphs of the feed captures in
``tests/data/feeds`` recombined, 1-2 sightings per article, entity links drawn from a Zipf
distribution. The SQLite file is cached under the temp directory between runs.

    python bench/api.py [--articles 100000] [--seconds 10] [--clients 50] [--processes 1 2]
                        [--cache on|off]
    DATABASE_URL=postgresql+psycopg://... REDIS_URL=redis://.../8 python bench/api.py
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
from sqlalchemy import Engine, bindparam, event, func, insert, select, update
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_scratch import scratch_environment
from services.api import params, schemas
from services.core.search import parse
from services.db import entity_reads, reads
from services.db.apikeys import create_key
from services.db.engine import make_engine, reading, session_factory, transaction
from services.db.migrate import upgrade
from services.db.models import Article, ArticleEntity, ArticleUrl, Base, Entity, Feed, Sighting

REPO = Path(__file__).resolve().parent.parent
DATASET_VERSION = 3  # bump when the generated data changes: the cached SQLite file is rebuilt
FEEDS = 200
ENTITIES = 20_000
ZIPF_S, ZIPF_Q = 1.1, 5  # Zipf-Mandelbrot: the top entity is in about 20% of articles
LINKS_PER_ARTICLE = (3, 12)
PARAGRAPHS_PER_ARTICLE = (4, 10)
CHUNK = 5_000
BIG_TABLES = ("articles", "article_entities", "sightings", "article_urls", "entities")
Json = dict[str, Any]


# --- the dataset -------------------------------------------------------------------------------


def corpus() -> tuple[list[str], list[str], list[str]]:
    """Titles, paragraphs and capitalised names from the feed captures."""
    titles: set[str] = set()
    paragraphs: set[str] = set()
    for path in sorted((REPO / "tests/data/feeds").glob("*__*.xml")):
        for entry in feedparser.parse(io.BytesIO(path.read_bytes())).entries:
            titles.add(html.unescape(entry.get("title", "")).strip())
            for block in [entry.get("summary", "")] + [c.value for c in entry.get("content", [])]:
                for part in re.split(r"</?p[^>]*>|<br\s*/?>", block):
                    plain = html.unescape(re.sub(r"<[^>]+>", " ", part)).strip()
                    if len(plain) > 40:
                        paragraphs.add(" ".join(plain.split()))
    names = {m for p in paragraphs for m in re.findall(r"(?:[A-Z][a-z]+ ){1,2}[A-Z][a-z]+", p)}
    return sorted(t for t in titles if t), sorted(paragraphs), sorted(names)


def zipf_weights(n: int, s: float, q: float) -> list[float]:
    return [1 / ((rank + q) ** s) for rank in range(1, n + 1)]


def build(engine: Engine, articles: int, *, seed: int = 7) -> None:
    """Fill a migrated, empty database with ``articles`` articles and their links."""
    rng = random.Random(seed)
    titles, paragraphs, names = corpus()
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(Feed), [
            {"url": f"https://feeds{i}.example/rss", "kind": "http", "title": f"Feed {i}",
             "interval_seconds": 900, "next_poll_at": now, "created_at": now, "updated_at": now}
            for i in range(1, FEEDS + 1)
        ])  # fmt: skip
        entity_names = (names * (ENTITIES // max(1, len(names)) + 1))[:ENTITIES]
        conn.execute(insert(Entity), [
            {"type": rng.choice(("person", "organization", "place")), "key": f"{n.lower()} {i}",
             "name": n if i < len(names) else f"{n} {i}", "aliases": [], "article_count": 0,
             "first_seen_at": now, "last_seen_at": now}
            for i, n in enumerate(entity_names)
        ])  # fmt: skip
    weights = zipf_weights(ENTITIES, ZIPF_S, ZIPF_Q)
    counts = [0] * (ENTITIES + 1)
    started = time.perf_counter()
    for low in range(0, articles, CHUNK):
        rows, links, sightings, urls = [], [], [], []
        for i in range(low, min(articles, low + CHUNK)):
            article_id = i + 1
            body = "\n\n".join(rng.sample(paragraphs, rng.randint(*PARAGRAPHS_PER_ARTICLE)))
            title = rng.choice(titles)
            # Mostly in arrival order, with publication times a few days off.
            when = (
                now - timedelta(minutes=5 * (articles - i)) + timedelta(hours=rng.uniform(-48, 0))
            )
            rows.append({
                "id": article_id, "canonical_url": f"https://news.example/{article_id}",
                "title": title, "byline": None, "published_at": when, "sort_at": when,
                "language": "en", "text": body, "summary": body[:200],
                "content_hash": hashlib.sha256(f"{article_id}:{title}\n{body}".encode())
                .hexdigest(), "boilerplate": {}, "created_at": when, "updated_at": when,
            })  # fmt: skip
            # Every URL an article was seen under is kept, its canonical one included.
            urls.append({"article_id": article_id, "url": f"https://news.example/{article_id}",
                         "created_at": when})  # fmt: skip
            chosen = set(
                rng.choices(range(1, ENTITIES + 1), weights, k=rng.randint(*LINKS_PER_ARTICLE))
            )
            for offset, entity_id in enumerate(sorted(chosen)):
                counts[entity_id] += 1
                links.append({"article_id": article_id, "entity_id": entity_id,
                              "mentions": rng.randint(1, 5), "first_offset": offset})  # fmt: skip
            for feed_id in rng.sample(range(1, FEEDS + 1), rng.choice((1, 1, 1, 2))):
                key = f"{feed_id}:{article_id}"
                sightings.append({
                    "feed_id": feed_id, "item_key": key,
                    "item_key_hash": hashlib.sha256(key.encode()).hexdigest(),
                    "article_id": article_id, "url": f"https://news.example/{article_id}",
                    "content_hash": "x", "first_seen_at": when, "last_seen_at": when,
                })  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(Article), rows)
            conn.execute(insert(ArticleEntity), links)
            conn.execute(insert(Sighting), sightings)
            conn.execute(insert(ArticleUrl), urls)
        print(f"  {low + len(rows):,} articles ({time.perf_counter() - started:.0f} s)", flush=True)
    with engine.begin() as conn:
        conn.execute(
            update(Entity)
            .where(Entity.id == bindparam("eid"))
            .values(article_count=bindparam("n")),
            [{"eid": i, "n": n} for i, n in enumerate(counts) if i and n],
        )
    if engine.dialect.name == "postgresql":
        # What autovacuum does on a live server; a SQLite file has no statistics unless asked.
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT setval('articles_id_seq', (SELECT max(id) FROM articles))")
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def prepare(database_url: str | None, articles: int) -> str:
    """The database URL of a migrated database holding ``articles`` articles (built if needed)."""
    if database_url is None:
        cache = Path(tempfile.gettempdir()) / "newsdesk-bench-api"
        cache.mkdir(exist_ok=True)
        database_url = f"sqlite:///{cache / f'articles-{articles}-v{DATASET_VERSION}.sqlite3'}"
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            have = conn.scalar(select(func.count()).select_from(Article))
        if have != articles:
            print(f"building {articles:,} articles in {engine.url.render_as_string()}")
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # The dataset's rows refer to feeds and entities by ids counted from 1.
                    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
                    conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
                for table in reversed(Base.metadata.sorted_tables):
                    conn.execute(table.delete())
            build(engine, articles)
    finally:
        engine.dispose()
    return database_url


# --- the routes and their bare-loop equivalents ------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    work: Callable[[Session], Json] | None  # the handler's repository calls, then the JSON body


def article_route(
    name: str, path: str, *, entity: str | None = None, q: str | None = None
) -> Route:
    search = parse(q) if q else None

    def work(session: Session) -> Json:
        groups = [entity_reads.find_entity_ids(session, entity)] if entity else None
        found = reads.list_articles(session, limit=50, entity_ids=groups, search=search)
        last = found.items[-1] if found.more else None
        cursor = params.encode_article_cursor(last.sort_at, last.id) if last else None
        return {"data": [schemas.article_summary(a) for a in found.items], "next_cursor": cursor}

    return Route(name, path, work)


def pick_routes(engine: Engine, query: str) -> list[Route]:
    with engine.connect() as conn:
        top = conn.execute(
            select(Entity.id, Entity.article_count).order_by(Entity.article_count.desc()).limit(1)
        ).one()
        total = conn.scalar(select(func.count()).select_from(Article)) or 1
    print(f"entity {top.id}: in {top.article_count:,} articles ({top.article_count / total:.0%})")
    by_entity = f"/v1/articles?limit=50&entity={top.id}"
    by_text = f"/v1/articles?limit=50&q={query.replace(' ', '%20')}"
    return [
        Route("healthz (trivial JSON)", "/healthz", None),
        article_route("articles?limit=50", "/v1/articles?limit=50"),
        article_route(f"entity={top.id}", by_entity, entity=str(top.id)),
        article_route(f"q={query}", by_text, q=query),
    ]


def bare_loop(engine: Engine, route: Route, seconds: float) -> float:
    """Calls per second of the route's repository work + JSON encoding, in one thread."""
    assert route.work is not None
    factory = session_factory(engine)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        with reading(factory) as session:
            json.dumps(route.work(session))
        done += 1
    return done / (time.perf_counter() - started)


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def plans(engine: Engine, route: Route) -> list[str]:
    """Each statement the route runs with its plan; a full scan of a big table is flagged."""
    assert route.work is not None
    with captured(engine) as statements, reading(session_factory(engine)) as session:
        route.work(session)
    lines = []
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        for statement, parameters in statements:
            if statement.strip().upper().startswith(("BEGIN", "SELECT 1")):
                continue
            lines.append("  SQL " + " ".join(statement.split())[:150])
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            for row in conn.exec_driver_sql(explain + statement, parameters):
                step = str(row[-1])
                full = _full_scan(step, sqlite=sqlite)
                lines.append(f"    {'FULL SCAN! ' if full else ''}{step}")
    return lines


def _full_scan(step: str, *, sqlite: bool) -> bool:
    if sqlite:
        match = re.search(r"\bSCAN (\w+)", step)
        return bool(match and match.group(1) in BIG_TABLES and "INDEX" not in step)
    match = re.search(r"Seq Scan on (\w+)", step)
    return bool(match and match.group(1) in BIG_TABLES)


# --- the server and the load generator ---------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return own + sum(cpu_seconds(child) for child in children)


@contextmanager
def server(env: dict[str, str], processes: int = 1) -> Iterator[Server]:
    """``newsdesk api --processes N`` as a subprocess, once every process serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--processes", str(processes)],
        cwd=REPO, env=os.environ | env,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise RuntimeError(f"newsdesk api did not start: {line!r}")
        yield Server(match.group(1), proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def load(base: str, path: str, token: str, *, clients: int, seconds: float) -> Json:
    """``clients`` loops each keeping one request in flight; latencies after a 1 s warm-up."""
    latencies: list[float] = []
    errors = requests = 0
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as http:
        warm_until = time.perf_counter() + 1.0
        stop = warm_until + seconds

        async def client() -> None:
            nonlocal errors, requests
            while (begun := time.perf_counter()) < stop:
                async with http.get(path) as resp:
                    await resp.read()
                    ok = resp.status == 200
                requests += 1
                if begun >= warm_until:
                    latencies.append(time.perf_counter() - begun)
                    errors += not ok

        await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies) * 1000,
        "p95": latencies[int(len(latencies) * 0.95)] * 1000,
        "errors": errors,
        "requests": requests,  # warm-up included
    }


def measure(
    api: Server, token: str, routes: list[Route], bare: dict[str, float], args: Any
) -> None:
    """Load each route in turn and print its line: rates, latencies, ratio to the bare loop,
    and the API's CPU time per request (all its processes; steadier than rates on a busy
    machine)."""
    print(f"{'route':<32} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'bare/s':>8} {'ratio':>6} "
          f"{'cpu ms/req':>10}")  # fmt: skip
    for route in routes:
        before = cpu_seconds(api.pid)
        got = asyncio.run(load(api.url, route.path, token, clients=args.clients,
                               seconds=args.seconds))  # fmt: skip
        cpu = (cpu_seconds(api.pid) - before) * 1000 / max(1, got["requests"])
        rate = bare.get(route.name)
        ratio = f"{got['rps'] / rate:.0%}" if rate else "-"
        shown = f"{rate:8.0f}" if rate else f"{'-':>8}"
        errors = f"  ({got['errors']} errors)" if got["errors"] else ""
        print(f"{route.name:<32} {got['rps']:8.0f} {got['p50']:8.1f} {got['p95']:8.1f} "
              f"{shown} {ratio:>6} {cpu:10.2f}{errors}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per route, after warm-up")
    parser.add_argument("--bare-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--query", default="coronavirus county", help="the full-text query")
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="API server processes, per run"
    )
    parser.add_argument(
        "--cache", choices=("on", "off"), default="on",
        help="the API's response cache (off: NEWSDESK_API_CACHE_MB=0)",
    )  # fmt: skip
    args = parser.parse_args()
    database_url = prepare(os.environ.get("DATABASE_URL") or None, args.articles)
    with ExitStack() as stack:
        _, env = scratch_environment(
            stack, database_url=database_url, redis_url=os.environ.get("REDIS_URL"),
            NEWSDESK_API_PORT="0", NEWSDESK_LOG_LEVEL="WARNING",
            NEWSDESK_RATE_LIMIT="1000000000",  # counted in Redis on every request, never hit
            **({} if args.cache == "on" else {"NEWSDESK_API_CACHE_MB": "0"}),
        )  # fmt: skip
        engine = make_engine(database_url, immediate=False)
        stack.callback(engine.dispose)
        with transaction(session_factory(engine)) as session:
            token = create_key(session, name="bench", scopes=("read",), now=datetime.now(UTC)).token
        routes = pick_routes(engine, args.query)
        for route in routes[1:]:
            print(f"\nplans: {route.name}")
            print("\n".join(plans(engine, route)))
        bare = {r.name: bare_loop(engine, r, args.bare_seconds) for r in routes if r.work}
        for processes in args.processes:
            with server(env, processes) as api:
                print(
                    f"\n{engine.dialect.name}, {args.articles:,} articles, {args.clients} "
                    f"clients, {processes} API process(es), {args.seconds:.0f} s per route, "
                    f"response cache {args.cache}"
                )
                if args.cache == "on":
                    print("(one URL per route, repeated: the dashboard case, answered from the "
                          "cache; --cache off for the SQL path)")  # fmt: skip
                measure(api, token, routes, bare, args)
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM api_keys WHERE name = 'bench'")


if __name__ == "__main__":
    main()
