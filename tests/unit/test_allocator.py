"""The worker's allocator settings: memory freed by one batch is reused by the next."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.procs import MMAP_THRESHOLD_MB

# Allocate and free a 40 MB buffer (larger than glibc's adaptive mapping threshold, smaller
# than ours), touching every page, as a spaCy batch does with its arrays; print the page
# faults the last rounds cost.
_ROUNDS = """
import resource, sys
from services.procs import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "tuned" else False
def round_():
    buffer = bytearray(40 << 20)
    buffer[::4096] = b"x" * len(range(0, 40 << 20, 4096))
    del buffer
round_(); round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_new_page_faults() -> None:
    assert MMAP_THRESHOLD_MB > 40
    took, tuned = _faults("tuned")
    _, default = _faults("default")
    assert took
    # 10 rounds of 10,240 pages each: by default every round maps and faults them anew.
    assert default > 50_000, default
    assert tuned < 1_000, tuned
