"""bench/rq_bookkeeping.py starts and finishes real jobs both ways and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys

import redis

from services.config import Settings
from tests.conftest import REPO


def test_both_packers_are_measured_and_the_redis_is_left_as_found(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    redis_conn.set("newsdesk:test:kept", "1")
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "rq_bookkeeping.py"),
         "--batch", "4", "--rounds", "3", "--redis-url", settings.redis_url],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "rq bookkeeping, CPU ms per job (batches of 4, 3 rounds each)"
    row = re.compile(r"\s+(\S+)\s+start\s+([\d.]+)\s+finish\s+([\d.]+)\s+both\s+([\d.]+)")
    rows = {
        m.group(1): [float(m.group(i)) for i in (2, 3, 4)]
        for line in lines[1:3]
        if (m := row.match(line))
    }
    assert set(rows) == {"redis-py", "direct"}, out
    for start, finish, both in rows.values():
        assert start > 0 and finish > 0 and abs(start + finish - both) < 0.002
    ratio = float(re.search(r"direct / redis-py:\s+([\d.]+)%", out).group(1))  # type: ignore[union-attr]
    assert abs(ratio - 100 * rows["direct"][2] / rows["redis-py"][2]) < 0.2
    assert [key.decode() for key in redis_conn.keys("*")] == ["newsdesk:test:kept"]
