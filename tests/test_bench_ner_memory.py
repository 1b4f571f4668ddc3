"""bench/ner_memory.py measures NER's peak memory on long texts, grouped and in one call."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_grouped_piping_of_long_texts_peaks_lower_than_one_call() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ner_memory.py"), "--texts", "4", "--chars", "60000"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("NER memory: 4 texts of 60,000 characters"), out
    grouped, single = (float(m) for m in re.findall(r"\+\s*(\d+) MB peak RSS", out))
    # Each text alone against all four at once: a quarter of the working arrays at a time.
    assert grouped < single * 0.6, out
    assert re.search(r"ratio grouped / single: 0\.\d\d", out), out
