"""SQL statements a worker batch sends, by kind: what one batch of new articles costs the
database in round trips.

Builds the inputs of ``bench/extract.py`` (real paragraphs recombined into distinct
articles, HTML pages and plain-text files), loads the worker's context as a worker process
does (``workers.runner.build_context``: the model, the engine, the known names) and runs
``workers.batch.prepare`` on them ``--batch`` at a time, as a worker takes a batch. After
``--warmup`` batches (so the entity and alias tables are not empty), every statement the
worker's engine sends is counted (an executemany counts once, as it is one round trip on
PostgreSQL) and printed per batch, most frequent first, with the total.

    python bench/statements.py                        # SQLite in a temp directory
    python bench/statements.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
        --redis-url redis://127.0.0.1:6379/12         # emptied first (--reset implied)
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_scratch import scratch_environment  # noqa: E402
from extract import fresh_inputs  # noqa: E402

from services.config import Settings  # noqa: E402
from workers import batch  # noqa: E402
from workers.context import install  # noqa: E402
from workers.runner import build_context  # noqa: E402

WIDTH = 110  # characters of each statement shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="items per batch (default 16)")
    parser.add_argument("--batches", type=int, default=6, help="measured batches (default 6)")
    parser.add_argument("--warmup", type=int, default=4, help="batches before (default 4)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with ExitStack() as stack:
        _, env = scratch_environment(
            stack, database_url=args.database_url, redis_url=args.redis_url
        )
        settings = Settings.from_env(env)
        inputs = fresh_inputs(settings, args.batch * (args.warmup + args.batches))
        ctx = build_context(settings)
        install(ctx)
        counts: Counter[str] = Counter()
        counting = False

        def note(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
            if counting:
                shown = " ".join(statement.split())[:WIDTH]
                counts[shown + ("  [executemany]" if many else "")] += 1

        event.listen(ctx.sessions.kw["bind"], "before_cursor_execute", note)
        for n, start in enumerate(range(0, len(inputs), args.batch)):
            counting = n >= args.warmup
            batch.prepare(ctx, inputs[start : start + args.batch])
            ctx.prepared.clear()
        backend = settings.database_url.split(":", 1)[0]
        print(f"statements per batch of {args.batch} new articles ({backend}, "
              f"{args.batches} batches after {args.warmup}):")  # fmt: skip
        for statement, count in counts.most_common():
            print(f"  {count / args.batches:6.1f}  {statement}")
        print(f"  {sum(counts.values()) / args.batches:6.1f}  in all")
        install(None)


if __name__ == "__main__":
    main()
