"""Peak memory of NER on a batch of long texts: the worker's grouped piping against one call.

A worker runs NER on its batch through ``Recogniser.recognise_many``, which gives
``nlp.pipe`` consecutive texts up to ``workers.nlp.PIPE_MAX_CHARS`` characters at a time (a
longer text alone). The model holds its working arrays for every text of a call at once,
and a long text costs more per character than a short one, so a batch of long texts in one
call is where a worker's memory peaks.

Texts are real paragraphs (the seed article, LA Times, NYT and BBC, as in
``bench/extract.py``) joined until each is ``--chars`` long (the worker's default cap is
100,000). Each measurement runs in a fresh process (peak RSS only grows): the model is
loaded and warmed on a few ordinary texts, then the batch goes through ``recognise_many``
once with the service's grouping and once as a single call, under the worker's process
settings (``services.procs``: the allocator keeps freed memory). Prints each process's peak RSS
(VmHWM) above its level before the batch, and their ratio.

    python bench/ner_memory.py                   # 16 texts of 100,000 characters
    python bench/ner_memory.py --texts 32 --chars 30000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def long_texts(count: int, chars: int) -> list[str]:
    """``count`` texts of ``chars`` characters, each real paragraphs from its own offset."""
    from extract import paragraph_pool

    pool, _ = paragraph_pool()
    texts = []
    for n in range(count):
        parts: list[str] = []
        size, i = 0, n * 7
        while size < chars:
            parts.append(pool[i % len(pool)])
            size += len(parts[-1]) + 2
            i += 1
        texts.append("\n\n".join(parts)[:chars])
    return texts


def measure(count: int, chars: int, grouped: bool) -> float:
    """MB the batch adds to this process's peak RSS."""
    from extract import peak_rss_mb

    from services.procs import keep_freed_memory, tune_gc
    from workers.nlp import Recogniser, load_model

    keep_freed_memory()  # the worker process's settings (workers.runner.work)
    texts = long_texts(count, chars)
    recogniser = Recogniser(load_model(), **({} if grouped else {"pipe_chars": count * chars + 1}))
    recogniser.recognise_many([t[:3_000] for t in texts[:4]])  # warm up
    tune_gc()
    before = peak_rss_mb(os.getpid())
    recogniser.recognise_many(texts)
    return peak_rss_mb(os.getpid()) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=16, help="texts in the batch (default 16)")
    parser.add_argument("--chars", type=int, default=100_000, help="characters each (100,000)")
    parser.add_argument("--one", choices=["grouped", "single"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a measuring child: print the MB added
        print(f"{measure(args.texts, args.chars, args.one == 'grouped'):.1f}")
        return
    found = {}
    for how in ("grouped", "single"):
        out = subprocess.run(
            [sys.executable, __file__, "--texts", str(args.texts), "--chars", str(args.chars),
             "--one", how],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        found[how] = float(out.strip().splitlines()[-1])
    from workers.nlp import PIPE_MAX_CHARS

    print(f"NER memory: {args.texts} texts of {args.chars:,} characters")
    print(f"  grouped (at most {PIPE_MAX_CHARS:,} characters a call):"
          f" +{found['grouped']:7.0f} MB peak RSS")  # fmt: skip
    print(f"  one nlp.pipe call for the batch:           +{found['single']:7.0f} MB peak RSS")
    ratio = found["grouped"] / found["single"] if found["single"] > 0 else float("nan")
    print(f"  ratio grouped / single: {ratio:.2f}")


if __name__ == "__main__":
    main()
