"""Item keys and content hashes: which identity an item gets, and what counts as a change."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.items import MAX_KEY_CHARS, item_content_hash, item_key


@pytest.mark.parametrize(
    ("guid", "link", "expected"),
    [
        ("urn:x:1", "https://a.example/1", "urn:x:1"),
        ("  urn:x:1\n", None, "urn:x:1"),
        (None, "https://a.example/1", "https://a.example/1"),
        ("   ", " https://a.example/1 ", "https://a.example/1"),
        ("", "https://a.example/1", "https://a.example/1"),
    ],
)
def test_key_prefers_guid_then_link(guid: str | None, link: str | None, expected: str) -> None:
    assert item_key(guid, link, "Title", "Body") == expected


def test_key_without_guid_or_link_hashes_title_and_content() -> None:
    key = item_key(None, None, "Title", "Body")
    expected = hashlib.sha256(b"Title\x1fBody").hexdigest()
    assert key == "sha256:" + expected
    assert item_key(None, "", " Title ", "Body\n") == key
    assert item_key(None, None, "Title", "Other body") != key
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert item_key(None, None, "ab", "c") != item_key(None, None, "a", "bc")


def test_overlong_key_is_bounded_and_stable() -> None:
    guid = "g" * (MAX_KEY_CHARS + 1)
    key = item_key(guid, None, None, None)
    assert key.startswith("sha256:") and len(key) == len("sha256:") + 64
    assert key == item_key(guid, "https://other.example/", "t", "c")
    assert item_key("g" * MAX_KEY_CHARS, None, None, None) == "g" * MAX_KEY_CHARS


def test_content_hash_ignores_nothing_it_is_given_and_treats_none_as_empty() -> None:
    base = item_content_hash("T", "https://a.example/", "S", "C")
    assert base == hashlib.sha256(b"T\x1fhttps://a.example/\x1fS\x1fC").hexdigest()
    assert item_content_hash("T", "https://a.example/", "S", None) == item_content_hash(
        "T", "https://a.example/", "S", ""
    )
    for changed in (
        item_content_hash("T2", "https://a.example/", "S", "C"),
        item_content_hash("T", "https://b.example/", "S", "C"),
        item_content_hash("T", "https://a.example/", "S2", "C"),
        item_content_hash("T", "https://a.example/", "S", "C2"),
        item_content_hash("T", "https://a.example/", "SC", ""),
    ):
        assert changed != base


@given(
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
    st.one_of(st.none(), st.text()),
)
def test_key_is_total_deterministic_and_bounded(
    guid: str | None, link: str | None, title: str | None, content: str | None
) -> None:
    key = item_key(guid, link, title, content)
    assert key == item_key(guid, link, title, content)
    assert 0 < len(key) <= MAX_KEY_CHARS
    assert len(item_content_hash(title, link, content, guid)) == 64
