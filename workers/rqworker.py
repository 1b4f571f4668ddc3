"""The rq worker every newsdesk worker process runs: rq's SimpleWorker (jobs run in the
process, no fork per job) whose command listener stops promptly."""

from __future__ import annotations

from rq import SimpleWorker

# How long rq's command listener (a thread reading the worker's pubsub channel, through which
# `rq` sends stop and kill commands) waits for a message before looking again; also the
# longest a stopping worker waits for it.
LISTENER_WAKE_SECONDS = 1.0


class PromptWorker(SimpleWorker):
    """rq's SimpleWorker with a command listener that wakes every second, not every minute.

    rq runs redis-py's pubsub thread with a 60 s wait, unsubscribes at teardown, then stops
    the thread, and redis-py (8.2) waits for it. A listener that has already seen its
    unsubscribe confirmed waits its whole 60 s for a new subscription before it looks at the
    stop request: a stopping worker (a deploy, `newsdesk up` interrupted, a test's burst
    worker) hung for up to a minute, depending on which thread got there first.
    """

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # rq declares the attribute None-typed; it holds the thread while subscribed.
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=LISTENER_WAKE_SECONDS,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )
