"""The exact-content hash: a text hashed in parts equals the text hashed whole."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.core.fingerprint import joined_hash, normalise_text, text_hash

# Any Unicode text, with the characters that fold, compose or count as separators well
# represented: combining marks, compatibility forms, final sigma, ß, ligatures, whitespace.
TRICKY = "\u0301\u0327\u0308\u00df\u03a3\u03c2\ufb01\u2460\uff21\u1100\u1161\u00a0\n\t _-."
texts = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(TRICKY)), max_size=40)


@settings(max_examples=2000, deadline=None)
@given(title=texts, body=texts)
@example(title="ΟΔΟΣ", body="\u0301abc")
@example(title="", body="  ")
@example(title="Straße.", body="-- ﬁnal")
@example(title="a\u0301", body="\u0327b")
def test_a_title_and_body_hashed_apart_hash_as_the_joined_text(title: str, body: str) -> None:
    whole = text_hash(f"{title}\n{body}")
    assert joined_hash(normalise_text(title), normalise_text(body)) == whole
