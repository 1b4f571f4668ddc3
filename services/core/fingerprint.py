"""Text normalisation and the exact-content hash that dedups identical article texts."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalise_text(text: str) -> str:
    """Case, accents-as-composed, punctuation and whitespace folded away."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def text_hash(text: str) -> str:
    """sha256 of the normalised text: equal for copies differing only in case/punctuation."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def joined_hash(*normalised: str) -> str:
    """:func:`text_hash` of texts joined by newlines, from each one's :func:`normalise_text`:
    a newline is a separator no character composes or folds across, so the joined text
    normalises to the parts' normalised forms joined by one space, the empty ones left out.
    A caller that needs a part's normalised form anyway does not normalise it twice."""
    return hashlib.sha256(" ".join(p for p in normalised if p).encode("utf-8")).hexdigest()
