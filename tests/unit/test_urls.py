"""Property tests of URL canonicalisation: one spelling per page, whatever the link says."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from services.core.urls import TRACKING_PARAMS, canonical_url

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=1, max_size=4).map(".".join).map(lambda h: h + ".test")
SEGMENT = st.text(
    st.characters(codec="utf-8", exclude_characters="/?#\x00"),
    max_size=12,
)
PATH = st.lists(SEGMENT, max_size=4).map(lambda parts: "/" + "/".join(quote(p) for p in parts))
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n not in TRACKING_PARAMS and not n.startswith(("utm_", "pk_", "mtm_", "at_"))
)
VALUE = st.text(st.characters(codec="utf-8"), max_size=10)
QUERY = st.lists(st.tuples(NAME, VALUE), max_size=4, unique_by=lambda kv: kv[0])
TRACKING = st.lists(
    st.tuples(
        st.sampled_from(["utm_source", "utm_medium", "UTM_Campaign", "fbclid", "gclid",
                         "mc_eid", "pk_kwd", "smid"]),
        st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=8),
    ),
    min_size=1, max_size=3,
)  # fmt: skip
FRAGMENT = st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=8)


def build(scheme: str, host: str, port: str, path: str, query: list[tuple[str, str]]) -> str:
    q = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query)
    return f"{scheme}://{host}{port}{path}" + (f"?{q}" if q else "")


URLS = st.builds(
    build,
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    HOST,
    st.sampled_from(["", ":8080", ":1"]),
    PATH,
    QUERY,
)


@given(URLS)
@example("https://example.com/a%2Fb/../c/?q=a+b&q=a%20b#x")
@example("http://example.com/%7Euser/caf%C3%A9")
def test_canonical_url_is_idempotent(url: str) -> None:
    once = canonical_url(url)
    assert once is not None
    assert canonical_url(once) == once


@given(URLS, TRACKING, FRAGMENT)
def test_tracking_parameters_and_fragments_are_dropped(
    url: str, tracking: list[tuple[str, str]], fragment: str
) -> None:
    joiner = "&" if "?" in url else "?"
    noisy = url + joiner + "&".join(f"{k}={v}" for k, v in tracking) + f"#{fragment}"
    assert canonical_url(noisy) == canonical_url(url)
    parts = urlsplit(canonical_url(noisy) or "")
    assert not parts.fragment
    kept = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    assert kept.isdisjoint(k.lower() for k, _ in tracking)


@given(HOST, PATH, QUERY)
def test_scheme_host_default_port_and_trailing_slash_are_normalised(
    host: str, path: str, query: list[tuple[str, str]]
) -> None:
    for scheme, default in (("http", ":80"), ("https", ":443")):
        plain = canonical_url(build(scheme, host, "", path, query))
        assert plain is not None and plain.startswith(f"{scheme}://{host}/")
        variants = [
            build(scheme.upper(), host.upper(), default, path, query),
            build(scheme, host + ".", "", path, query),
            build(scheme, host, "", path.rstrip("/") + "/", query),
            build(scheme, host, default, (path.rstrip("/") or "") + "/", query),
        ]
        assert {canonical_url(v) for v in variants} == {plain}
        # A port that is not the scheme's default is part of the address.
        assert canonical_url(build(scheme, host, ":8081", path, query)) != plain


@given(st.sampled_from(["ftp", "file", "javascript", "mailto", "data"]), HOST, PATH)
def test_only_http_urls_have_a_canonical_form(scheme: str, host: str, path: str) -> None:
    assert canonical_url(f"{scheme}://{host}{path}") is None


def test_query_order_does_not_matter() -> None:
    assert canonical_url("https://e.test/a?b=2&a=1") == canonical_url("https://e.test/a?a=1&b=2")
