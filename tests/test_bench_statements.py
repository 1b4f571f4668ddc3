"""bench/statements.py counts a worker batch's statements on a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_the_statement_count_of_small_batches_is_printed_by_kind() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "statements.py"),
         "--batch", "4", "--batches", "2", "--warmup", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("statements per batch of 4 new articles (sqlite, 2 batches")
    counts = {
        m.group(2): float(m.group(1))
        for line in lines[1:]
        if (m := re.match(r"\s+([\d.]+)\s+(.+)$", line))
    }
    articles = [n for s, n in counts.items() if s.startswith("INSERT INTO articles")]
    assert articles and sum(articles) <= 2.0, out  # one per run, a batch is one or two runs
    assert counts["in all"] == sum(n for s, n in counts.items() if s != "in all")
