"""Per-process worker context: settings, database and the loaded NER model, set up once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.core.entities import RawMention
from services.core.errors import ConfigError
from services.metrics import Recorder


class Recogniser(Protocol):
    """Port for named-entity recognition (spaCy in production)."""

    def recognise(self, text: str) -> list[RawMention]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    """What a job needs that must not be rebuilt per job."""

    settings: Settings
    sessions: sessionmaker[Session]
    recogniser: Recogniser
    clock: Callable[[], datetime] = field(default=utc_now)
    metrics: Recorder = field(default_factory=lambda: Recorder(None))
    # Items of the jobs in hand already extracted and through NER, or already stored with
    # their batch (workers.batch.prepare), by (feed id, item key, content hash); each job
    # takes its own out.
    prepared: dict[tuple[int, str, str], Any] = field(default_factory=dict)


_current: WorkerContext | None = None


def install(ctx: WorkerContext | None) -> None:
    """Make ``ctx`` the context of this process's jobs (done once at worker start)."""
    global _current
    _current = ctx


def current() -> WorkerContext:
    if _current is None:
        raise ConfigError("no worker context installed: run jobs through `newsdesk worker`")
    return _current
