"""rq's bookkeeping for a worker batch: CPU to start and finish each extraction job, with
redis-py's own command packer and with ``services.redis_packer.DirectPacker`` (the
service's clients), measured in one run.

A worker (``workers.runner.NewsdeskWorker``) starts every job of a batch in one Redis
transaction before running any (``_start``) and records their success in another
(``_record_finished``): about 25 commands a job. This script queues ``--batch`` extraction
jobs carrying a page-sized payload, starts and finishes them as the worker does, and
repeats, alternating the two clients round by round so both see the same machine. Reports
the CPU per job of each step with each packer and their ratio.

    python bench/rq_bookkeeping.py                       # embedded Redis
    python bench/rq_bookkeeping.py --redis-url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scratch import scratch_environment  # noqa: E402

from services.queue import EXTRACT_FUNC  # noqa: E402
from services.redis_packer import command_packer  # noqa: E402
from workers.runner import NewsdeskWorker  # noqa: E402

QUEUE = "newsdesk-bench-bookkeeping"
PAYLOAD = {"item": {"title": "A headline", "summary": "A summary. " * 40}, "page": "x" * 20_000}


class Side:
    """One client (with a given command packer), its queue and a worker bound to it."""

    def __init__(self, url: str, name: str, packer: object) -> None:
        self.connection = redis.Redis.from_url(url, command_packer=packer)
        self.queue = Queue(QUEUE, connection=self.connection, serializer=JSONSerializer)
        self.worker = NewsdeskWorker(
            [self.queue], name=f"bench-{name}", connection=self.connection,
            serializer=JSONSerializer,
        )  # fmt: skip
        self.worker.register_birth()
        self.start = self.finish = 0.0
        self.jobs = 0
        self.ids: list[str] = []

    def round(self, size: int) -> None:
        jobs = [
            self.queue.enqueue(EXTRACT_FUNC, PAYLOAD, result_ttl=60, failure_ttl=60)
            for _ in range(size)
        ]
        self.ids += (j.id for j in jobs)
        self.connection.rpush(self.queue.intermediate_queue_key, *(j.id for j in jobs))
        began = time.process_time()
        running = self.worker._start(jobs, self.queue)
        started = time.process_time()
        self.worker._finished = []
        for job, execution in running:
            job.ended_at = rq_now()
            self.worker._finished.append((job, execution))
        self.worker._record_finished()
        ended = time.process_time()
        self.worker._marked.clear()
        self.start += started - began
        self.finish += ended - started
        self.jobs += size

    def close(self) -> None:
        """Delete what the rounds left (finished jobs and results would expire in a minute)."""
        self.worker.register_death()
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in self.ids:
                pipe.delete(Job.key_for(job_id), Result.get_key(job_id))
            pipe.delete(self.worker.key)
            pipe.execute()
        self.queue.delete(delete_jobs=False)
        for registry in (self.queue.finished_job_registry, self.queue.started_job_registry):
            self.connection.delete(registry.key)
        self.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="jobs per batch (default 32)")
    parser.add_argument("--rounds", type=int, default=40, help="measured batches (default 40)")
    parser.add_argument("--redis-url", help="a Redis to use (default: an embedded one)")
    args = parser.parse_args()
    with ExitStack() as stack:
        _, env = scratch_environment(stack, database_url=None, redis_url=args.redis_url)
        url = env["REDIS_URL"]
        sides = {"redis-py": Side(url, "redis-py", None), "direct": Side(url, "direct",
                 command_packer())}  # fmt: skip
        try:
            for _ in range(3):  # warm-up
                for side in sides.values():
                    side.round(args.batch)
            for side in sides.values():
                side.start = side.finish = 0.0
                side.jobs = 0
            for _ in range(args.rounds):
                for side in sides.values():
                    side.round(args.batch)
        finally:
            for side in sides.values():
                side.close()
    print(f"rq bookkeeping, CPU ms per job (batches of {args.batch}, {args.rounds} rounds each)")
    per = {
        name: (side.start * 1000 / side.jobs, side.finish * 1000 / side.jobs)
        for name, side in sides.items()
    }
    for name, (start, finish) in per.items():
        print(f"  {name:9} start {start:6.3f}   finish {finish:6.3f}   both {start + finish:6.3f}")
    old, new = sum(per["redis-py"]), sum(per["direct"])
    print(f"  direct / redis-py: {100 * new / old:5.1f}%")


if __name__ == "__main__":
    main()
