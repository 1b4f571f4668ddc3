"""bench/growth.py prints a worker's CPU by batch phase as the database grows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_each_step_prints_every_phase_and_their_own_sum() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "growth.py"),
         "--inputs", "12", "--step", "6", "--batch", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("worker CPU by batch phase as the database grows (sqlite, batches")
    steps = [
        m
        for line in lines[1:]
        if (m := re.match(r"\s+articles\s+(\d+)-(\d+)\s+own\s+([\d.]+)\s+\((.*)\)$", line))
    ]
    assert [(m.group(1), m.group(2)) for m in steps] == [("0", "6"), ("6", "12")], out
    for m in steps:
        phases = {k: float(v) for k, v in (p.split() for p in m.group(4).split(", "))}
        assert {"extract", "ner", "lookups", "sketch", "store"} <= phases.keys(), out
        assert phases["ner"] > 0 and phases["store"] > 0, out
        own = sum(v for k, v in phases.items() if k not in {"extract", "ner"})
        assert abs(float(m.group(3)) - own) < 0.05, out  # each shown to 0.01
