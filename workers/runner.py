"""`newsdesk worker`: a small supervisor of non-forking rq worker processes.

Each process loads the spaCy model once and runs rq's SimpleWorker, which executes jobs
in-process: rq's fork-per-job worker would pay the model's memory and start-up cost on
every job (measured at 25-35% of NER throughput). A process that dies is restarted.

When extraction jobs wait in the queue, a process takes several at once: its share of them
(the waiting jobs divided among the queue's idle processes, itself included), at most
``NEWSDESK_WORKER_BATCH``. Their items are extracted and run through NER together (one
``nlp.pipe`` batch, cheaper per text than one call per text), then each job runs, one after
the other, and their successes are recorded in Redis together at the batch's end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from rq.executions import Execution
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import WorkerStatus

from services.config import Settings
from services.core.page import warm_up
from services.db.engine import make_engine, session_factory
from services.logs import bind, setup_logging
from services.metrics import Recorder
from services.procs import (
    detach_and_die_with_parent,
    forks_die_with_this_process,
    keep_freed_memory,
    tune_gc,
)
from services.queue import (
    EXTRACT_FUNC,
    extract_queue,
    redis_client,
    requeue_stranded,
    take_share,
)
from workers.context import WorkerContext, current, install
from workers.nlp import Recogniser, known_names_loader, load_model
from workers.pool import supervise
from workers.rqworker import PromptWorker

log = logging.getLogger("newsdesk.worker")

# A running job's heartbeat: renewed this often, and considered lost (its worker died) once
# it is this old; rq's maintenance then retries the job.
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 15
# A job a process took from the queue (rq moves it to its intermediate queue) but died before
# starting is put back at the front of its queue once it has been seen there this long. A
# live process starts its jobs within milliseconds of taking them; rq's own sweep would
# wait a minute, then count it as a failed attempt.
STRANDED_AFTER = 10.0


def build_context(settings: Settings) -> WorkerContext:
    """Load the model and open the database: once per worker process."""
    started = time.monotonic()
    engine = make_engine(settings.database_url, immediate=True, pool_size=2, role="worker")
    sessions = session_factory(engine)
    # Names the service already knows are recognised where the model misses them.
    recogniser = Recogniser(load_model(), loader=known_names_loader(sessions))
    warm_up()  # the language identifier loads its model on first use: not in the first job
    log.info("worker.ready model_ms=%d pid=%d", (time.monotonic() - started) * 1000, os.getpid())
    return WorkerContext(
        settings=settings,
        sessions=sessions,
        recogniser=recogniser,
        metrics=Recorder(redis_client(settings)),
    )


def resident_mb() -> float:
    """This process's current resident memory (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class NewsdeskWorker(PromptWorker):
    """rq's in-process worker, which stops (warmly, between jobs) once its resident memory
    passes a limit, so a leak costs a restart by the supervisor rather than the host.

    A job in hand keeps a heartbeat (a thread renews its entry in the started registry every
    ``HEARTBEAT_INTERVAL`` seconds for ``HEARTBEAT_TTL``). rq's SimpleWorker sends none while
    a job runs, so it registers the job for its whole timeout plus 60 s: the job of a killed
    worker would come back only after that (4 minutes by default) instead of within
    ``HEARTBEAT_TTL`` and a maintenance interval.
    """

    max_rss_mb: float = 0.0
    batch: int = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._marked: set[str] = set()  # jobs of the batch in hand already started (_start)
        # Extraction jobs of the batch in hand that succeeded, recorded together at its end;
        # None outside a batch.
        self._finished: list[tuple[Any, Any]] | None = None

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL

    @property
    def dequeue_timeout(self) -> int:
        """How long an idle process waits on the empty queue before looking again: at most
        one maintenance interval. rq waits its worker TTL less 15 s (405 s), and runs
        maintenance only between two waits, so the jobs of a process killed while the others
        sat idle (abandoned, or stranded in the intermediate queue) would come back only when
        a new job arrived or minutes later."""
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))

    def execute_job(self, job: Any, queue: Any) -> None:
        from workers.batch import BATCH_CPU, Phases

        started = time.process_time()
        jobs = [job, *self._more_jobs(job, queue)]
        running = self._start(jobs, queue)
        done = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(running, done), name="rq-heartbeat", daemon=True
        )
        beat.start()
        self._finished = []
        metrics = current().metrics
        phases = Phases(metrics)
        try:
            with metrics.held():  # the batch's metrics go to Redis at its end
                if len(jobs) > 1:
                    self._prepare(jobs, phases)
                for one, execution in running:
                    with bind(job_id=one.id):  # on every line the job logs (JSON format)
                        self.perform_job(one, queue, execution)
                done.set()
                beat.join()
                self._record_finished()
                if len(jobs) > 1:  # the rest: rq's bookkeeping and each job's own run
                    rest = time.process_time() - started - phases.total
                    metrics.add(BATCH_CPU, rest, phase="jobs")
        finally:
            done.set()
            beat.join()
            self._finished = None  # any left unrecorded stay started: rq's cleanup retries them
            self._marked.clear()
            current().prepared.clear()
        self.set_state(WorkerStatus.IDLE)
        if self.max_rss_mb and (rss := resident_mb()) > self.max_rss_mb:
            log.warning("worker.memory_limit rss_mb=%.0f limit_mb=%.0f; stopping for a restart",
                        rss, self.max_rss_mb)  # fmt: skip
            self._stop_requested = True

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        for queue in self.queues:
            try:
                requeue_stranded(queue, older_than=STRANDED_AFTER)
            except redis.RedisError:
                log.warning("worker.requeue_stranded_failed queue=%s", queue.name, exc_info=True)

    def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
        if job.id in self._marked:  # done by _start for every job in hand
            self._marked.discard(job.id)
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def _defers(self, job: Any) -> bool:
        """Whether ``job``'s success is recorded with the rest of its batch: extraction jobs,
        which have no dependents and do not repeat."""
        return self._finished is not None and job.func_name == EXTRACT_FUNC and not job.repeats_left

    def handle_execution_ended(self, job: Any, queue: Any, heartbeat_ttl: int) -> None:
        if self._defers(job):  # the batch's heartbeat thread keeps it registered meanwhile
            job.ended_at = rq_now()
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(
        self, job: Any, queue: Any, started_job_registry: Any, execution: Any
    ) -> None:
        if self._defers(job):
            assert self._finished is not None
            self._finished.append((job, execution))
            return
        super().handle_job_success(job, queue, started_job_registry, execution)

    def _record_finished(self) -> None:
        """Record the batch's successful extraction jobs as rq does one by one (status,
        result, finished registry, counters, the execution's removal from the started
        registry), in one Redis transaction instead of one watched transaction each: these
        jobs have no dependents to release. A process that dies before it leaves them all
        started, and their retries find their items stored."""
        finished, self._finished = self._finished or [], None
        if not finished:
            return
        with self.connection.pipeline(transaction=True) as pipe:
            for job, execution in finished:
                self.increment_successful_job_count(pipeline=pipe)
                self.increment_total_working_time(job.ended_at - job.started_at, pipe)
                ttl = job.get_result_ttl(self.default_result_ttl)
                if ttl != 0:
                    self._record_success(job, execution, ttl, pipe)
                job.cleanup(ttl, pipeline=pipe, remove_from_queue=False)
                job._status = JobStatus.FINISHED
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.execute()

    def _record_success(self, job: Any, execution: Any, ttl: int, pipe: Any) -> None:
        """What rq's ``Job._handle_success`` records (status, end time, result, finished
        registry) without re-saving the whole job: that re-compresses the job's payload, a
        whole article page, only to store the same bytes again. Every other field of the
        job's hash was written when the job was queued or started."""
        job.set_status(JobStatus.FINISHED, pipeline=pipe)
        pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
        Result.create(
            job, Result.Type.SUCCESSFUL, return_value=job._result, ttl=ttl,
            worker_name=self.name, pipeline=pipe, execution_id=execution.id,
            execution_started_at=execution.created_at, execution_ended_at=job.ended_at,
        )  # fmt: skip
        job.finished_job_registry.add(job, ttl, pipe)

    def _start(self, jobs: list[Any], queue: Any) -> list[tuple[Any, Any]]:
        """Start every job in hand: its execution (rq's record of a run, which registers it
        in the started registry), its status, worker and heartbeat, and its removal from rq's
        intermediate queue, all in one Redis transaction, before any of them runs. Returns
        each job with its execution.

        rq's cleanup retries an abandoned job only if its status is STARTED, and drops the
        registry entries of the others. Started one by one, a process killed between two
        would leave the later jobs of its batch registered but QUEUED: out of the started
        registry at the next cleanup, and back only when rq's intermediate-queue sweep fails
        them minutes later. In one transaction, the batch is either all started or none (and
        it costs one round trip, not two a job).
        """
        ttl = self.get_heartbeat_ttl(jobs[0])
        with self.connection.pipeline(transaction=True) as pipe:
            self.heartbeat(ttl, pipeline=pipe)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            executions = []
            for one in jobs:
                executions.append(Execution.create(one, ttl, pipeline=pipe, worker_name=self.name))
                one.heartbeat(rq_now(), ttl, pipeline=pipe)
                one.prepare_for_execution(self.name, pipeline=pipe)
                pipe.persist(one.key)
                if len(self.queues) == 1:
                    pipe.lrem(queue.intermediate_queue_key, 1, one.id)
            pipe.execute()
        for execution in executions:
            self.executions[execution.id] = execution
        self._marked.update(one.id for one in jobs)
        return list(zip(jobs, executions, strict=True))

    def _more_jobs(self, job: Any, queue: Any) -> list[Any]:
        """Further jobs already waiting in ``queue`` (never blocks), when ``job`` is an
        extraction job: this process's share of them (``services.queue.take_share``), at most
        ``batch - 1``;
        none while a stop is pending.

        Taken as rq takes one (moved to its intermediate queue, then fetched), but for all of
        them in two round trips rather than two a job. An id whose job is gone stays in the
        intermediate queue for rq's sweep, as with rq's own dequeue.
        """
        if (
            self.batch <= 1
            or job.func_name != EXTRACT_FUNC
            or self._stop_requested
            or len(self.queues) != 1
        ):
            return []
        ids = take_share(queue, self.batch - 1)
        if not ids:
            return []
        found = self.job_class.fetch_many(ids, self.connection, serializer=self.serializer)
        more = [j for j in found if j is not None]
        for one in more:
            one.redis_server_version = job.redis_server_version
        return more

    def _prepare(self, jobs: list[Any], phases: Any) -> None:
        """Extraction, NER and storage for the batch's new items in one go
        (workers.batch.prepare, timing its ``phases``), bounded by the first job's timeout.
        A failure here only costs the batching: each job then does its own work, and
        reports its own errors."""
        from workers.batch import prepare

        payloads = [j.args[0] for j in jobs if j.func_name == EXTRACT_FUNC and j.args]
        started = time.monotonic()
        try:
            with self.death_penalty_class(jobs[0].timeout or 180, JobTimeoutException):
                ready = prepare(current(), payloads, phases)
        except Exception:  # the jobs then run one by one, each doing its own work
            log.warning("worker.batch_prepare_failed jobs=%d", len(jobs), exc_info=True)
            current().prepared.clear()
            return
        log.debug("worker.batch jobs=%d ready=%d ms=%d", len(jobs), ready,
                  (time.monotonic() - started) * 1000)  # fmt: skip

    def _beat(self, running: list[tuple[Any, Any]], done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_INTERVAL):
            try:
                with self.connection.pipeline() as pipe:
                    self.heartbeat(HEARTBEAT_TTL + 60, pipeline=pipe)
                    for job, execution in running:
                        execution.heartbeat(job.started_job_registry, HEARTBEAT_TTL, pipeline=pipe)
                    pipe.execute()
            except redis.RedisError:
                log.warning(
                    "worker.heartbeat_failed job_ids=%s", ",".join(j.id for j, _ in running)
                )


def make_worker(settings: Settings, name: str | None = None) -> NewsdeskWorker:
    connection = redis_client(settings)
    worker = NewsdeskWorker(
        [extract_queue(settings, connection)],
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        maintenance_interval=settings.maintenance_interval,
    )
    worker.max_rss_mb = settings.worker_max_rss_mb
    worker.batch = settings.worker_batch
    return worker


def work(settings: Settings, *, burst: bool = False, index: int = 0) -> None:
    """Run one worker process until stopped (or, with ``burst``, until the queue is empty)."""
    setup_logging(settings.log_level, f"worker[{index}]")
    keep_freed_memory()
    context = build_context(settings)
    install(context)
    tune_gc()
    forks_die_with_this_process()  # rq's scheduler process ends with this one
    worker = make_worker(settings, name=f"newsdesk-{os.uname().nodename}-{os.getpid()}")
    try:
        # rq logs several lines per job; newsdesk logs one summary line per item instead.
        # SIGTERM is rq's warm shutdown: the job in hand finishes, then work() returns.
        worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
    finally:
        install(None)
        worker.connection.close()
        engine = context.sessions.kw.get("bind")
        if engine is not None:
            engine.dispose()
    log.info("worker.stopped pid=%d", os.getpid())


def _child(settings: Settings, index: int) -> None:
    detach_and_die_with_parent()
    work(settings, index=index)


def run(settings: Settings, *, burst: bool = False) -> None:
    """Start ``settings.workers`` processes; restart any that die; SIGTERM stops them warmly."""
    setup_logging(settings.log_level, "worker")
    if settings.workers == 1 or burst:
        work(settings, burst=burst)
        return
    supervise(settings, count=settings.workers, target=_child)
