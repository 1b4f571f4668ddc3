"""A worker's CPU per article by batch phase as the database grows: whether its own work
(dedup lookups, sketch, store, entities) stays flat while the articles pile up.

Builds the inputs of ``bench/extract.py`` (real paragraphs recombined into distinct
articles, HTML pages and plain-text files: many share a paragraph or two, so near-duplicate
candidates grow with the database as they do for a developing story), loads the worker's
context as a worker process does (``workers.runner.build_context``) and runs
``workers.batch.prepare`` on them a batch at a time, in this process, with no queue. Every
``--step`` articles it prints the CPU of each phase per article over that step, and the sum
of the worker's own phases (all but extraction and NER).

    python bench/growth.py                            # SQLite in a temp directory
    python bench/growth.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
        --redis-url redis://127.0.0.1:6379/12         # emptied first
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scratch import scratch_environment  # noqa: E402
from extract import fresh_inputs  # noqa: E402

from services.config import Settings  # noqa: E402
from services.metrics import Recorder  # noqa: E402
from workers import batch  # noqa: E402
from workers.context import install  # noqa: E402
from workers.runner import build_context  # noqa: E402

# The phases that are NER and extraction, the work the extract+NER loop also does.
SHARED = ("extract", "ner")


class PhaseTally(Recorder):
    """CPU seconds by batch phase, kept in this process instead of sent to Redis."""

    def __init__(self) -> None:
        super().__init__(None)
        self.seconds: Counter[str] = Counter()

    def add(self, name: str, value: float = 1.0, **labels: Any) -> None:
        if name == batch.BATCH_CPU:
            self.seconds[str(labels["phase"])] += value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=2000, help="articles (default 2000)")
    parser.add_argument("--step", type=int, default=400, help="articles per line (default 400)")
    parser.add_argument("--batch", type=int, help="items per batch (default: the service's)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with ExitStack() as stack:
        _, env = scratch_environment(
            stack, database_url=args.database_url, redis_url=args.redis_url
        )
        settings = Settings.from_env(env)
        size = args.batch or settings.worker_batch
        inputs = fresh_inputs(settings, args.inputs)
        ctx = build_context(settings)
        install(ctx)
        backend = settings.database_url.split(":", 1)[0]
        print(f"worker CPU by batch phase as the database grows ({backend}, batches of {size}, "
              f"ms per article over each {args.step}):")  # fmt: skip
        tally = PhaseTally()
        for start in range(0, len(inputs), args.step):
            part = inputs[start : start + args.step]
            tally.seconds.clear()
            for first in range(0, len(part), size):
                batch.prepare(ctx, part[first : first + size], batch.Phases(tally))
                ctx.prepared.clear()
            per = {k: v * 1000 / len(part) for k, v in sorted(tally.seconds.items())}
            own = sum(v for k, v in per.items() if k not in SHARED)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in per.items())
            print(f"  articles {start:>6}-{start + len(part):<6} own {own:5.2f}   ({shown})")
        install(None)


if __name__ == "__main__":
    main()
