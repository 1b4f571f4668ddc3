"""rq queues and the jobs newsdesk enqueues: names, ids, timeouts and retry policy in one place."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import as_text
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from services.config import Settings
from services.redis_packer import command_packer

log = logging.getLogger("newsdesk.worker")

EXTRACT_FUNC = "workers.jobs.extract_item"
REPROCESS_FUNC = "workers.jobs.reprocess_article"
EXTRACT_RETRY_INTERVALS = [10, 60, 300]
FAILURE_TTL = 7 * 24 * 3600
# A finished extraction job keeps its payload (the item, and the article page the poller
# fetched) in Redis for as long as its result. The item is in SQL by then (sightings, the
# stored source), so a minute is kept: long enough for rq's unique enqueue to absorb a poll
# that read the sightings just before the job stored its own, and for a dashboard to show
# recent jobs, without holding an hour of article pages in a Redis that must not evict.
RESULT_TTL = 60


def redis_client(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url`` (``redis://``, ``rediss://`` or ``unix://``), packing
    commands in C (``services.redis_packer``)."""
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=30, health_check_interval=30,
        command_packer=command_packer(),
    )  # fmt: skip


def extract_queue(settings: Settings, connection: redis.Redis) -> Queue:
    return Queue(settings.extract_queue, connection=connection, serializer=JSONSerializer)


# Share of Redis' maxmemory past which pollers queue nothing more (see `backlog`).
REDIS_MEMORY_HIGH_WATER = 0.8


def backlog(queue: Queue) -> tuple[int, float | None]:
    """(jobs waiting in ``queue``, share of Redis' ``maxmemory`` in use), in one round trip;
    the share is None when Redis has no ``maxmemory`` (or does not say).

    The queue's length alone does not bound Redis: each job carries its item and maybe its
    article page. Under ``noeviction`` a full Redis refuses every write, so pollers stop
    short of it and leave the room to the workers, whose bookkeeping needs it.
    """
    with queue.connection.pipeline(transaction=False) as pipe:
        pipe.llen(queue.key)
        pipe.info("memory")
        depth, memory = pipe.execute()
    limit = int(memory.get("maxmemory") or 0)
    return int(depth), (int(memory["used_memory"]) / limit if limit else None)


def extract_job_id(feed_id: int, item_key: str, content_hash: str) -> str:
    """Deterministic: the same version of the same item always maps to the same job."""
    digest = hashlib.sha256(f"{feed_id}\x1f{item_key}\x1f{content_hash}".encode()).hexdigest()
    return f"extract-{digest[:40]}"


def _enqueue_unique(
    queue: Queue, func: str, arg: Any, *, job_id: str, timeout: int, description: str
) -> bool:
    """Enqueue with the project's job policy; False when a job with this id already exists."""
    try:
        queue.enqueue(
            func,
            arg,
            job_id=job_id,
            unique=True,
            job_timeout=timeout,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            retry=Retry(max=len(EXTRACT_RETRY_INTERVALS), interval=EXTRACT_RETRY_INTERVALS),
            description=description,
        )
    except DuplicateJobError:
        return False
    return True


def enqueue_extract(queue: Queue, payload: dict[str, Any], *, timeout: int) -> bool:
    """Queue one extraction job; False when the same job is already queued or running."""
    job_id = extract_job_id(payload["feed_id"], payload["item_key"], payload["content_hash"])
    description = f"extract feed={payload['feed_id']} item={payload['item_key'][:80]}"
    return _enqueue_unique(
        queue, EXTRACT_FUNC, payload, job_id=job_id, timeout=timeout, description=description
    )


def enqueue_reprocess(queue: Queue, article_id: int, *, run: str, timeout: int) -> bool:
    """Queue a re-run of entity extraction for one stored article, once per ``run`` (a token
    naming one `newsdesk reprocess` invocation); False if this run already queued it."""
    return _enqueue_unique(
        queue, REPROCESS_FUNC, article_id, job_id=f"reprocess-{run}-{article_id}",
        timeout=timeout, description=f"reprocess article={article_id}",
    )  # fmt: skip


# -- taking extraction jobs back and in batches --------------------------------------------

# Back to the front of the queue only if it is still in the intermediate queue: a process
# that started it meanwhile has taken it out.
_REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""


# Up to ARGV[1] jobs from the queue (KEYS[1]) to its intermediate queue (KEYS[2]), as rq
# moves the one job it takes: a worker's share of the waiting jobs, shared among the
# queue's idle workers (KEYS[3], rq's set of them; the taker is idle until it starts its batch),
# rounded up. A backlog goes in full batches; a burst is spread over the idle processes.
_TAKE = """
local waiting = redis.call('LLEN', KEYS[1])
if waiting == 0 then return {} end
local idle = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', key, 'state') == 'idle' then idle = idle + 1 end
end
local take = math.min(tonumber(ARGV[1]), math.ceil(waiting / math.max(idle, 1)))
local ids = {}
for _ = 1, take do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  ids[#ids + 1] = id
end
return ids
"""


def take_share(queue: Queue, limit: int) -> list[str]:
    """Move a worker's share of the jobs waiting in ``queue`` (see ``_TAKE``), at most
    ``limit``, to its intermediate queue, as rq moves the one job it takes; their ids."""
    keys = [queue.key, queue.intermediate_queue_key, WORKERS_BY_QUEUE_KEY % queue.name]
    return [as_text(i) for i in queue.connection.register_script(_TAKE)(keys=keys, args=[limit])]


def requeue_stranded(queue: Queue, *, older_than: float, now: float | None = None) -> list[str]:
    """Put the jobs stranded in ``queue``'s intermediate queue back at its front; returns
    their ids.

    A job is stranded when it is still QUEUED, not in the started registry, and was first
    seen there ``older_than`` seconds ago or more (rq's own first-seen mark, which its sweep
    shares). A job that is not QUEUED is left to rq's sweep.
    """
    intermediate = queue.intermediate_queue
    ids = intermediate.get_job_ids()
    if not ids:
        return []
    started = set(queue.started_job_registry.get_job_ids(cleanup=False))
    moment = time.time() if now is None else now
    script = queue.connection.register_script(_REQUEUE)
    requeued: list[str] = []
    for job_id in ids:
        if job_id in started or intermediate.set_first_seen(job_id):
            continue  # started, or seen here for the first time now
        first = intermediate.get_first_seen(job_id)
        if first is None or moment - first.timestamp() < older_than:
            continue
        job = queue.fetch_job(job_id)
        if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
            continue
        keys = [intermediate.key, queue.key, intermediate.get_first_seen_key(job_id)]
        if script(keys=keys, args=[job_id]):
            requeued.append(job_id)
    if requeued:
        log.warning("worker.requeued_stranded queue=%s jobs=%d", queue.name, len(requeued))
    return requeued


# -- webhook deliveries -----------------------------------------------------------------------
# No rq Retry: the retry schedule lives in SQL (services/db/deliveries.py), and a lost job is
# handed out again by the dispatcher when its lease ends. One job carries several leases,
# sent concurrently by one delivery process, so rq's per-job cost is paid once per batch.
DELIVER_FUNC = "workers.deliver.deliver_batch"
DELIVER_RESULT_TTL = 600
DELIVER_GRACE = 30  # seconds a delivery job may run beyond the subscriber's timeout


def webhook_queue(settings: Settings, connection: redis.Redis) -> Queue:
    return Queue(settings.webhook_queue, connection=connection, serializer=JSONSerializer)


def delivery_job_id(delivery_id: int, token: int) -> str:
    """Named after the job's first lease (the token changes at every hand-out)."""
    return f"deliver-{delivery_id}-{token}"


def delivery_batches(
    leased: Sequence[tuple[int, int, int]], *, batch: int, spread: int = 1
) -> list[list[tuple[int, int]]]:
    """Split ``(delivery id, token, subscription id)`` leases into jobs' ``(id, token)`` lists.

    At most ``batch`` leases a job, and at least ``spread`` jobs when there are that many
    subscriptions (so idle delivery processes share a hand-out); a subscription's leases sit
    next to each other, so a slow subscriber holds as few processes as possible.
    """
    if not leased:
        return []
    ordered = sorted(leased, key=lambda lease: (lease[2], lease[0]))
    subscribers = len({lease[2] for lease in ordered})
    jobs = max(-(-len(ordered) // max(1, batch)), min(max(1, spread), subscribers))
    size, extra = divmod(len(ordered), jobs)
    batches, start = [], 0
    for i in range(jobs):
        end = start + size + (1 if i < extra else 0)
        batches.append([(d, t) for d, t, _ in ordered[start:end]])
        start = end
    return batches


def enqueue_deliveries(
    queue: Queue,
    leased: Sequence[tuple[int, int, int]],
    *,
    timeout: float,
    batch: int,
    spread: int = 1,
) -> int:
    """Queue ``leased`` as jobs (see ``delivery_batches``) in one Redis round trip; returns
    the number of deliveries queued."""
    jobs = [
        Queue.prepare_data(
            DELIVER_FUNC,
            args=([list(pair) for pair in pairs],),
            job_id=delivery_job_id(*pairs[0]),
            timeout=int(timeout) + DELIVER_GRACE,
            result_ttl=DELIVER_RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            description=f"deliver deliveries={','.join(str(d) for d, _ in pairs)[:200]}",
        )
        for pairs in delivery_batches(leased, batch=batch, spread=spread)
    ]
    if jobs:
        queue.enqueue_many(jobs)
    return len(leased)
