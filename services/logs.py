"""Logging setup shared by every entrypoint: one line per event, key=value fields."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, role: str) -> None:
    """Send logs to stderr as ``time level role logger message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines are noise at INFO; rq's own job lines are kept.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
