"""Logging shared by every role: one line per unit of work, as text or as JSON.

Log calls follow one convention: ``log.info("item.processed feed_id=%s status=%s", ...)``,
an event name then ``key=%s`` fields. The text format prints that line after the time,
level and role (for a terminal); the JSON format (for log collectors) emits one object per
line with the event, each field under its key with its original type, the ids bound to the
current unit of work (:func:`bind`: the rq job id, the API request id) and the traceback,
if any. ``NEWSDESK_LOG_FORMAT`` picks ``text``, ``json`` or ``auto`` (text on a terminal,
JSON otherwise).

Secrets never reach the output: webhook secrets (``whsec_...``), API keys (``nd_...``),
bearer tokens and passwords in URLs are masked in every format.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FORMATS = ("auto", "text", "json")

_bound: ContextVar[dict[str, Any] | None] = ContextVar("newsdesk_log_ids", default=None)
_FIELD = re.compile(r"(\w+)=%[-#0 +]*\d*(?:\.\d+)?[sdifrx]")
_EVENT = re.compile(r"^[a-z_]+(?:\.[a-z_]+)+")
_SECRETS = re.compile(
    r"whsec_[A-Za-z0-9+/=]{8,}"  # webhook signing secrets
    r"|\bnd_[A-Za-z0-9_-]{8,}"  # API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # Authorization header values
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in URLs
)
MASK = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every secret-looking token replaced by ``[redacted]``."""
    return _SECRETS.sub(MASK, text)


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Attach ``ids`` (job id, request id, ...) to every line logged inside the block."""
    token = _bound.set({**(_bound.get() or {}), **ids})
    try:
        yield
    finally:
        _bound.reset(token)


class TextFormatter(logging.Formatter):
    """``time level role logger: message [ids]``, secrets masked."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _bound.get()
        if ids:
            line += " " + " ".join(f"{k}={v}" for k, v in ids.items())
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, role, logger, event, message, fields, ids."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
        }
        template = record.msg if isinstance(record.msg, str) else ""
        event = _EVENT.match(template)
        if event:
            entry["event"] = event.group()
        entry["message"] = message
        entry.update(_fields(template, record.args))
        entry.update(_bound.get() or {})
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _fields(template: str, args: Any) -> dict[str, Any]:
    """``key=%s`` fields of a log call with their argument values (secrets masked)."""
    if not isinstance(args, tuple):
        return {}
    keys = _FIELD.findall(template)
    if len(keys) != len(args) or template.count("%") - 2 * template.count("%%") != len(args):
        return {}  # a call outside the convention: its message says it all
    return {
        key: redact(value) if isinstance(value, str) else _plain(value)
        for key, value in zip(keys, args, strict=True)
    }


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float) else redact(str(value))


def resolve_format(fmt: str | None = None) -> str:
    """``text`` or ``json``: ``fmt``, else ``NEWSDESK_LOG_FORMAT``; ``auto`` follows stderr."""
    chosen = (fmt or os.environ.get("NEWSDESK_LOG_FORMAT", "auto")).strip().lower()
    if chosen not in FORMATS:
        chosen = "auto"
    if chosen == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return chosen


def setup_logging(level: str, role: str, fmt: str | None = None) -> None:
    """Send this process's logs to stderr in the chosen format (see the module docstring)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(role) if resolve_format(fmt) == "json" else TextFormatter(role)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines (the API logs its own) and Alembic's plugin set-up are noise
    # at INFO; rq's own job lines and the migrations applied are kept.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
