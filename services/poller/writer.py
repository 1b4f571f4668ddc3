"""Group commit for the poller: many polls' state changes share one transaction and one thread.

Writing each poll's outcome in its own transaction costs a thread hop and a commit per feed,
which caps a poller at a few hundred feeds a second and keeps the event loop busy handing
work to threads. Callers ``await submit(...)`` as before and get their result once the batch
it joined has committed, so a poll still only moves on when its state is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.db.engine import transaction

Call = tuple[Callable[..., Any], dict[str, Any], "asyncio.Future[Any]"]


class GroupWriter:
    """Runs repository calls in shared transactions (a failing call is retried alone).

    Args:
        sessions: session factory of the database.
        max_batch: calls per transaction at most.
        max_delay: seconds a call waits for company before its batch is written.
    """

    def __init__(
        self, sessions: sessionmaker[Session], *, max_batch: int = 250, max_delay: float = 0.01
    ) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._pending: list[Call] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, func: Callable[..., Any], /, **kwargs: Any) -> Any:
        """Run ``func(session, **kwargs)`` in the next batch; returns its result or raises."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((func, kwargs, future))
        if len(self._pending) >= self._max_batch:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._start_flush)
        return await future

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            asyncio.get_running_loop().create_task(self._flush(batch))

    async def _flush(self, batch: list[Call]) -> None:
        # One batch at a time: SQLite has one writer anyway, and PostgreSQL gains nothing
        # from two poller transactions racing on the same rows.
        async with self._lock:
            try:
                outcomes = await asyncio.to_thread(self._run, batch)
            except Exception as exc:  # the commit itself failed: every call in it failed
                outcomes = [(False, exc)] * len(batch)
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run(self, batch: list[Call]) -> list[tuple[bool, Any]]:
        """The whole batch in one transaction; if any call fails, each alone in its own."""
        try:
            with transaction(self._sessions) as session:
                return [(True, func(session, **kwargs)) for func, kwargs, _ in batch]
        except Exception:
            if len(batch) == 1:
                raise
        outcomes: list[tuple[bool, Any]] = []
        for func, kwargs, _ in batch:
            try:
                with transaction(self._sessions) as session:
                    outcomes.append((True, func(session, **kwargs)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes
