"""Extraction throughput: one real worker process against a tight loop doing the same work.

Inputs are real texts: article pages built as in the tests (``tests/pages.py``: the seed
article and LA Times paragraphs wrapped in page chrome, extracted with trafilatura), and
plain-text files (the seed file itself and the LA Times articles as text). The first inputs
are those articles as they are; the rest are distinct compositions of the same real
paragraphs (seed, LA Times, NYT and BBC summaries): each input draws 6 paragraphs from the
pool with its own seeded RNG, in its own order, under a real headline. Two inputs share
0.2 paragraphs on average, so neither the URL, the text-hash nor a near-duplicate lookup
short-circuits a job: every measured job extracts, runs NER and stores a new article.

Measured in one run, on the same inputs:

- worker: ``newsdesk worker --workers 1`` (one process: rq SimpleWorker, model loaded once)
  takes the jobs from Redis and does extraction, dedup lookups, NER and the SQL writes;
  timed from the round's jobs appearing in its queue to the last one finished, after a
  warm-up. A round's jobs are created beforehand (the service's own ``enqueue_extract``, into
  a staging list) and then appear in the queue together, in one step: the producer's work
  (serialising and compressing every page) is not the worker's, and done inside the window
  it took CPU from the worker and the database on the same cores, and made the worker's
  first batch of each round a single job while the rest were still being queued.
- baseline: a loop in this process doing only ``extract()`` and the same spaCy NER
  (``workers.nlp.load_model()`` + ``Recogniser``) on the same payloads, once with one text
  per NER call and once batched as the worker batches (``NEWSDESK_WORKER_BATCH`` texts per
  ``recognise_many`` call, piped as the worker pipes them: the like-for-like loop).
  ``Recogniser`` also recalls known names the model missed (the country names and the
  text's own names; the worker's also knows the stored ones), a step of newsdesk's own: the
  loops do it too, as it is part of recognising entities, and it costs about 0.4 ms per
  article.

The loops run under the worker's process settings (``services.procs``: the allocator keeps
freed memory, the collector spares objects built at start), so the ratio compares the work
and not the process setup.

The inputs go in rounds of ``--chunk``: the worker takes a round from Redis, then each loop
runs on the same round, then the next round. The machine's speed drifts (other work, clock
changes); interleaving makes each side see the same machine, so the ratio holds even when
the absolute rates move.

Reports the rates, the worker's ratio to each loop by rate and by CPU time per article (the
CPU ratio does not move when other processes load the machine; target >= 85%), the
worker's time per article not spent on its own CPU (waiting for Redis and the database)
and, with PostgreSQL on this machine, the CPU its backends spent for the worker (its
connections are named ``newsdesk-worker``), the worker's CPU by batch phase (lookups,
extraction, sketch, NER, entities, store, and rq's bookkeeping with each job's own run, from
its ``newsdesk_worker_batch_cpu_seconds_total`` metric), and the worker's peak RSS (VmHWM,
target < 400 MB).

    python bench/extract.py                      # SQLite + embedded Redis
    python bench/extract.py --inputs 1000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
        --redis-url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Worker
from sqlalchemy import Engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scratch import scratch_environment  # noqa: E402

from services.config import Settings  # noqa: E402
from services.core.extract import ItemPayload, extract  # noqa: E402
from services.core.html_text import html_to_text  # noqa: E402
from services.db import feeds  # noqa: E402
from services.db.engine import (  # noqa: E402
    application_name,
    make_engine,
    session_factory,
    transaction,
)
from services.db.migrate import upgrade  # noqa: E402
from services.db.models import Article, Base, Sighting  # noqa: E402
from services.metrics import KEY as METRICS_KEY  # noqa: E402
from services.procs import keep_freed_memory, tune_gc  # noqa: E402
from services.queue import enqueue_extract, extract_queue  # noqa: E402
from tests import pages as real  # noqa: E402
from workers.batch import BATCH_CPU  # noqa: E402

PARAGRAPHS_PER_INPUT = 6
WARMUP = 20
SITE = "https://www.latimes.test"


# -- inputs -----------------------------------------------------------------------------------


def paragraph_pool() -> tuple[list[str], list[str]]:
    """(paragraphs, headlines): every distinct real paragraph and headline at hand."""
    import xml.etree.ElementTree as ET

    paragraphs = list(real.seed_article().paragraphs) + [i.paragraph for i in real.latimes_items()]
    headlines = [real.seed_article().title] + [i.title for i in real.latimes_items()]
    for capture in sorted(real.FEEDS.glob("*.xml")):
        if not capture.name.startswith(("bbc__", "nytimes__")):
            continue
        for node in ET.parse(capture).getroot().iterfind("./channel/item"):
            summary = html_to_text(node.findtext("description") or "")
            if len(summary.split()) >= 12:
                paragraphs.append(summary)
            headlines.append((node.findtext("title") or "").strip())
    return list(dict.fromkeys(paragraphs)), [h for h in dict.fromkeys(headlines) if h]


def plain_text(article: real.Article) -> str:
    return f"{article.title}\n\n" + "\n\n".join(article.paragraphs) + "\n"


def page_payload(feed_id: int, key: str, article: real.Article) -> dict[str, Any]:
    url = f"{SITE}/bench/{key}"
    page = real.article_page(article, canonical=f"{url}?utm_source=rss")
    return {
        "v": 1, "feed_id": feed_id, "kind": "feed", "item_key": key,
        "content_hash": hashlib.sha256(page.encode()).hexdigest(), "url": url,
        "title": article.title, "summary": html.escape(article.paragraphs[0]), "content": None,
        "content_type": "text/html", "published": None, "author": None,
        "page_html": page, "page_url": url,
    }  # fmt: skip


def file_payload(feed_id: int, key: str, content: str) -> dict[str, Any]:
    return {
        "v": 1, "feed_id": feed_id, "kind": "file", "item_key": f"{key}.txt",
        "content_hash": hashlib.sha256(content.encode()).hexdigest(), "url": None,
        "title": None, "summary": None, "content": content, "content_type": "text/plain",
        "published": None, "author": None,
    }  # fmt: skip


def build_inputs(count: int, http_id: int, folder_id: int) -> list[dict[str, Any]]:
    """``count`` distinct payloads: the seed file as it is, the LA Times articles as pages,
    then compositions of real paragraphs, pages and plain-text files alternating."""
    found = [file_payload(folder_id, "seed", real.SEED.read_text("utf-8"))]
    for i, article in enumerate(real.latimes_articles()):
        found.append(page_payload(http_id, f"latimes-{i}", article))
    pool, headlines = paragraph_pool()
    i = 0
    while len(found) < count:
        rng = random.Random(i)
        article = real.Article(rng.choice(headlines), tuple(rng.sample(pool, PARAGRAPHS_PER_INPUT)))
        key = f"mix-{i}"
        if i % 2:
            found.append(file_payload(folder_id, key, plain_text(article)))
        else:
            found.append(page_payload(http_id, key, article))
        i += 1
    return found[:count]


# -- the two measurements ---------------------------------------------------------------------


class Loop:
    """Extraction + NER alone, in this process: the same ``extract()`` and the same spaCy NER
    (``workers.nlp.load_model()`` + ``Recogniser``) as the worker, nothing else."""

    def __init__(self) -> None:
        from workers.nlp import Recogniser, load_model

        self.recogniser = Recogniser(load_model())
        # CPU seconds spent extracting and in NER, by batch size: the same phases as the
        # worker's own ``extract`` and ``ner`` figures.
        self.phases: dict[int, dict[str, float]] = {}

    def run(self, items: list[dict[str, Any]], *, batch: int) -> tuple[float, float]:
        """(seconds, CPU seconds) for ``items``; with ``batch`` > 1 the texts go through NER
        ``batch`` at a time (``recognise_many``, as a worker batches and pipes them)."""
        phases = self.phases.setdefault(batch, {"extract": 0.0, "ner": 0.0})
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            began = time.process_time()
            texts = [extract(ItemPayload.from_dict(p)).analysed_text for p in chunk]
            extracted = time.process_time()
            if batch == 1:
                self.recogniser.recognise(texts[0])
            else:
                self.recogniser.recognise_many(texts)
            phases["extract"] += extracted - began
            phases["ner"] += time.process_time() - extracted
        return time.perf_counter() - started, time.process_time() - cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Tally:
    seconds: float = 0.0
    cpu: float = 0.0

    def add(self, seconds: float, cpu: float) -> None:
        self.seconds += seconds
        self.cpu += cpu


def backends_cpu(engine: Engine, name: str) -> dict[int, float] | None:
    """CPU seconds of each PostgreSQL backend serving the connections named ``name``
    (``application_name``), when the server runs on this machine; None on SQLite, or when
    the backends are not this machine's processes."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": name},
        ).all()
    found: dict[int, float] = {}
    for pid in pids:
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                return None
            found[pid] = cpu_seconds(pid)
        except OSError:
            return None
    return found


def batch_phases(connection: redis.Redis) -> dict[str, float]:
    """The worker's CPU seconds by batch phase so far, from the service's metrics hash."""
    prefix = f'{BATCH_CPU}{{phase="'
    found: dict[str, float] = {}
    for field, value in connection.hgetall(METRICS_KEY).items():
        name = field.decode()
        if name.startswith(prefix):
            found[name.removeprefix(prefix).removesuffix('"}')] = float(value)
    return found


def measure(
    settings: Settings, env: dict[str, str], payloads: list[dict[str, Any]],
    warmup: list[dict[str, Any]], log_path: Path, *, chunk: int, engine: Engine,
) -> tuple[
    dict[str, Tally], float, float | None, dict[str, float], dict[int, dict[str, float]]
]:  # fmt: skip
    """Time and CPU of one `newsdesk worker --workers 1` process and of the loops, chunk by
    chunk on the same payloads (worker, then each loop, then the next chunk: all of them see
    the same machine), the worker's peak RSS in MB, the CPU seconds the PostgreSQL
    backends of the worker's connections spent meanwhile (None when not measurable), and
    the worker's CPU seconds by batch phase (its own metrics), and the loops' CPU seconds by
    phase (extraction, NER) by batch size."""
    connection = redis.Redis.from_url(settings.redis_url)
    queue = extract_queue(settings, connection)
    keep_freed_memory()  # as the worker process does (workers.runner.work)
    loop = Loop()
    tune_gc()
    batches = sorted({1, settings.worker_batch})
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "--workers", "1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (workers := Worker.all(queue=queue)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {log_path}")
            time.sleep(0.05)
        counters = Counters(queue, [w.key for w in workers])
        stage(queue, warmup)
        counters.run(done_before=0, count=len(warmup))
        for batch in batches:
            loop.run(warmup, batch=batch)
        loop.phases.clear()  # the warm-up's are not measured
        tallies = {"worker": Tally(), **{f"loop{b}": Tally() for b in batches}}
        phases_before = batch_phases(connection)  # the warm-up's batches are flushed by now
        worker_backends = application_name("worker")
        database_cpu: float | None = 0.0
        done = len(warmup)
        for start in range(0, len(payloads), chunk):
            part = payloads[start : start + chunk]
            stage(queue, part)
            backends = backends_cpu(engine, worker_backends)
            began, cpu = time.perf_counter(), cpu_seconds(proc.pid)
            counters.run(done_before=done, count=len(part))
            tallies["worker"].add(time.perf_counter() - began, cpu_seconds(proc.pid) - cpu)
            after = backends_cpu(engine, worker_backends)
            if database_cpu is not None and backends is not None and after is not None:
                database_cpu += sum(t - backends.get(pid, 0.0) for pid, t in after.items())
            else:
                database_cpu = None
            done += len(part)
            for batch in batches:
                tallies[f"loop{batch}"].add(*loop.run(part, batch=batch))
        phases = batch_phases(connection)
        for phase, seconds in phases_before.items():
            phases[phase] = phases.get(phase, 0.0) - seconds
        return tallies, peak_rss_mb(proc.pid), database_cpu, phases, loop.phases
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        connection.close()


# Every staged job id, in order, to the back of the queue, in one step (and the staging list
# out of rq's set of queues, where enqueueing registered it).
_RELEASE = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for i = 1, #ids, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], KEYS[1])
return #ids
"""


class _StagingQueue(Queue):
    """A queue of the same name whose jobs are created as usual (hash, origin, status
    QUEUED), their ids pushed to a staging list instead of the queue until :func:`release`."""

    @property
    def key(self) -> str:
        return f"{self._key}:staged"


def staging_key(queue: Queue) -> str:
    return f"{queue.key}:staged"


def stage(queue: Queue, payloads: list[dict[str, Any]]) -> None:
    """Create the extraction jobs of ``payloads`` for ``queue`` without queueing them yet."""
    staging = _StagingQueue(queue.name, connection=queue.connection, serializer=queue.serializer)
    for payload in payloads:
        if not enqueue_extract(staging, payload, timeout=600):
            raise SystemExit(f"job for {payload['item_key']} was already queued")


def release(queue: Queue) -> int:
    """Queue every staged job at once; returns how many."""
    keys = (staging_key(queue), queue.key, queue.redis_queues_keys)
    return int(queue.connection.eval(_RELEASE, len(keys), *keys))


class Counters:
    """Jobs the bench's worker process has ended, by its own counters in Redis (the
    finished-job registry forgets a job after its result TTL, 60 s, sooner than a long run
    takes), read with one small command: the wait polls them every 10 ms while the worker is
    measured, and rq's ``Worker.all`` (0.6 ms of CPU a call, and the Redis server's work for
    it) would load the machine the worker runs on, which the loops do not share."""

    FIELDS = ("successful_job_count", "failed_job_count")

    def __init__(self, queue: Queue, worker_keys: list[str]) -> None:
        self.queue = queue
        self.keys = worker_keys

    def ended(self) -> int:
        with self.queue.connection.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.hmget(key, *self.FIELDS)
            return sum(int(v) for values in pipe.execute() for v in values if v is not None)

    def run(self, *, done_before: int, count: int) -> None:
        """Release the staged round and wait until the worker has ended all of it."""
        if release(self.queue) != count:
            raise SystemExit(f"expected {count} staged jobs")
        target = done_before + count
        while self.ended() < target:
            time.sleep(0.01)
        if self.queue.failed_job_registry.count:
            raise SystemExit(f"{self.queue.failed_job_registry.count} jobs failed")


# -- setup ------------------------------------------------------------------------------------


def prepare_database(engine: Engine, *, reset: bool) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        existing = conn.scalar(select(func.count()).select_from(Article)) or 0
    if existing and not reset:
        raise SystemExit(
            f"the database already holds {existing} articles; the inputs would be duplicates. "
            "Use an empty database or pass --reset (deletes every row)."
        )
    if existing or reset:
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # DELETE leaves every row dead, and with autovacuum off (or behind) each run's
                # indexes grew with the previous runs' rows: the backends' CPU per article
                # drifted from 2.2 to 3.0 ms over a day's runs. TRUNCATE starts clean. Ids
                # go on from the last run's: the feeds get new ids, so the new run's job ids
                # (feed, item, content) cannot meet the last run's finished jobs in Redis.
                conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
            else:
                for name in tables:
                    conn.execute(text(f"DELETE FROM {name}"))


def register_feeds(engine: Engine) -> tuple[int, int]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        http = feeds.add_feed(s, url="https://www.latimes.test/bench.xml", kind="http",
                              interval_seconds=900, now=now)  # fmt: skip
        folder = feeds.add_feed(s, url="folder:/bench", kind="folder", interval_seconds=5,
                                now=now)  # fmt: skip
    return http.id, folder.id


def fresh_inputs(settings: Settings, count: int) -> list[dict[str, Any]]:
    """``count`` inputs (:func:`build_inputs`) for feeds registered in the settings' database,
    emptied first: what the in-process benches (statements, growth) run a worker batch on."""
    engine = make_engine(settings.database_url)
    try:
        prepare_database(engine, reset=True)
        http_id, folder_id = register_feeds(engine)
    finally:
        engine.dispose()
    return build_inputs(count, http_id, folder_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=400, help="measured jobs (default 400)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--reset", action="store_true", help="empty a non-empty database first")
    parser.add_argument("--chunk", type=int, default=50,
                        help="inputs per round of worker then loops (default 50)")  # fmt: skip
    parser.add_argument("--batch", type=int,
                        help="the worker's NEWSDESK_WORKER_BATCH, and the batched loop's "
                             "(default: the service's)")  # fmt: skip
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp, env = scratch_environment(
            stack, database_url=args.database_url, redis_url=args.redis_url,
            NEWSDESK_EXTRACT_QUEUE=f"bench-extract-{os.getpid()}", NEWSDESK_WORKERS="1",
            NEWSDESK_LOG_LEVEL="INFO",
            **({"NEWSDESK_WORKER_BATCH": str(args.batch)} if args.batch else {}),
        )  # fmt: skip
        settings = Settings.from_env(env)
        engine = make_engine(settings.database_url)
        prepare_database(engine, reset=args.reset)
        http_id, folder_id = register_feeds(engine)
        everything = build_inputs(WARMUP + args.inputs, http_id, folder_id)
        # The originals are measured; the warm-up takes inputs from the end.
        payloads, warmup = everything[: args.inputs], everything[args.inputs :]
        pages = sum(1 for p in payloads if p["kind"] == "feed")
        backend = settings.database_url.split(":", 1)[0]
        print(f"extract bench: backend={backend} inputs={len(payloads)} ({pages} HTML pages, "
              f"{len(payloads) - pages} plain-text files) cpus={os.cpu_count()}")  # fmt: skip

        child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        tallies, rss, database_cpu, phases, loop_phases = measure(
            settings, child_env, payloads, warmup, tmp / "worker.log", chunk=args.chunk,
            engine=engine,
        )  # fmt: skip
        with engine.connect() as conn:
            articles = conn.scalar(select(func.count()).select_from(Article)) or 0
            errors = conn.scalar(
                select(func.count()).select_from(Sighting).where(Sighting.error_code.is_not(None))
            )
        engine.dispose()
        count = len(payloads)
        worker = tallies.pop("worker")
        stored = f"batch {settings.worker_batch}; articles stored {articles}, item errors {errors}"
        rate, cpu_ms = count / worker.seconds, worker.cpu * 1000 / count
        print(f"  worker: queue + extract + dedup + NER + SQL  {rate:6.1f} articles/s  "
              f"{cpu_ms:5.1f} ms CPU/article  ({stored})")  # fmt: skip
        # Time per article not spent on the worker's CPU: waiting for Redis and the database
        # (their own CPU, when they share the machine's cores) and for the bench's poll.
        print(f"    worker waiting per article: {1000 / rate - cpu_ms:5.1f} ms")
        if database_cpu is not None:  # PostgreSQL on this machine: its share of the cores
            print(f"    PostgreSQL backends of the worker: {database_cpu * 1000 / count:5.1f} "
                  "ms CPU/article")  # fmt: skip
        if phases:  # where the worker's CPU went, by its own metrics (batches of 2 or more)
            shares = ", ".join(
                f"{phase} {seconds * 1000 / count:.2f}"
                for phase, seconds in sorted(phases.items(), key=lambda p: -p[1])
            )
            print(f"    worker CPU by batch phase, ms/article: {shares}")  # fmt: skip
        for name, loop in tallies.items():
            batch = int(name.removeprefix("loop"))
            how = "one text per NER call" if batch == 1 else f"batches of {batch} texts"
            print(f"  loop, extract + NER ({how}): {count / loop.seconds:6.1f} articles/s  "
                  f"{loop.cpu * 1000 / count:5.1f} ms CPU/article")  # fmt: skip
            print("    loop CPU by phase, ms/article: " + ", ".join(
                f"{phase} {seconds * 1000 / count:.2f}"
                for phase, seconds in loop_phases[batch].items()
            ))  # fmt: skip
            print(f"    ratio worker / loop: {loop.seconds / worker.seconds:6.1%} by rate, "
                  f"{loop.cpu / worker.cpu:6.1%} by CPU time   (target >= 85%)")  # fmt: skip
        print(f"  worker peak RSS (VmHWM): {rss:6.0f} MB   (target < 400 MB)")


if __name__ == "__main__":
    main()
