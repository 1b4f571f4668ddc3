"""Address policy, encoded IPv4 hosts, the allowlist, and HTTP timing headers, in tables."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ConfigError, FetchError
from services.core.httpdates import parse_cache_lifetime, parse_http_date, parse_retry_after
from services.core.netpolicy import (
    AllowList,
    check_address,
    is_public,
    literal_host_ip,
    parse_allowlist,
)

ip = ipaddress.ip_address
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_HTTP = "Fri, 01 May 2026 12:00:00 GMT"

NOT_PUBLIC = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254",
    "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255",
    "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.19.255.255",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "100::1",
    "2001:db8::1", "2001:2::1", "2001:10::1", "3fff::1", "64:ff9b:1::1", "5f00::1",
    # IPv6 forms that carry a non-public IPv4
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "::ffff:0:127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    "2002:a00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]  # fmt: skip

PUBLIC = [
    "1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.32.0.1",
    "192.0.3.1", "198.17.255.255", "198.20.0.1", "223.255.255.255",
    "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8, server 65.54.227.120
]  # fmt: skip


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_not_public(address: str) -> None:
    assert not is_public(ip(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public(address: str) -> None:
    assert is_public(ip(address))


PRIVATE_V4_NETS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
]  # fmt: skip


@given(
    net=st.sampled_from([ipaddress.IPv4Network(n) for n in PRIVATE_V4_NETS]),
    offset=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_random_ipv4_in_a_private_net_is_never_public(
    net: ipaddress.IPv4Network, offset: int
) -> None:
    inside = net[offset % net.num_addresses]
    assert not is_public(inside)
    mapped = ipaddress.IPv6Address(f"::ffff:{inside}")
    assert not is_public(mapped)
    assert not is_public(
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(inside))
    )


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_is_public_agrees_with_the_mapped_form(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    assert is_public(v4) == is_public(ipaddress.IPv6Address(f"::ffff:{v4}"))


# -- literal hosts ------------------------------------------------------------------------------

LITERALS = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0x7F.0.0.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("169.254.43518", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("127.0.0.1.", "127.0.0.1"),
    ("8.8.8.8", "8.8.8.8"),
    ("::1", "::1"),
    ("[::1]", "::1"),
    ("::ffff:7f00:1", "::ffff:127.0.0.1"),
    ("fe80::1%eth0", "fe80::1"),
]


@pytest.mark.parametrize(("host", "expected"), LITERALS)
def test_literal_host_ip_decodes_what_libc_accepts(host: str, expected: str) -> None:
    assert literal_host_ip(host) == ip(expected)


@pytest.mark.parametrize(
    "host",
    [
        "localhost", "example.com", "127.0.0.1.example.com", "1.2.3.4.5", "256.0.0.1",
        "127.256.0.1", "4294967296", "08.0.0.1", "0x7g.1", "127..1", "", "1e3", "0x7f.1.2.3.4",
        "127.0.0.1..", "[::1", "::g", "127.0.0.-1",
    ],
)  # fmt: skip
def test_literal_host_ip_leaves_names_and_garbage(host: str) -> None:
    assert literal_host_ip(host) is None


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "0177.0.0.1", "017700000001", "127.1", "0x7f000001"]
)
def test_decoding_matches_inet_aton(host: str) -> None:
    assert literal_host_ip(host) == ipaddress.IPv4Address(socket.inet_aton(host))


@given(st.text(alphabet="0123456789abcdefxX.", max_size=20))
def test_decoding_covers_every_spelling_inet_aton_accepts(host: str) -> None:
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    got = literal_host_ip(host)
    if expected is not None:
        assert got == expected
    elif got is not None:
        # Only the WHATWG extras: a bare "0x" part (zero) or one trailing dot.
        parts = host.removesuffix(".").lower().split(".")
        assert host.endswith(".") or "0x" in parts


# -- allowlist ----------------------------------------------------------------------------------


def test_allowlist_entries_with_and_without_ports() -> None:
    allow = parse_allowlist(
        ["10.0.0.0/8", " 127.0.0.1:8080 ", "", "[::1]:8443", "[fd00::/8]:443", "fe80::/10",
         "192.168.1.5", "172.16.0.0/12:9000"]
    )  # fmt: skip
    assert len(allow.rules) == 7
    yes = [
        ("10.1.2.3", 80), ("127.0.0.1", 8080), ("::1", 8443), ("fd00::5", 443),
        ("fe80::1", 1), ("192.168.1.5", 22), ("172.20.0.1", 9000), ("::ffff:10.0.0.1", 80),
    ]  # fmt: skip
    no = [
        ("127.0.0.1", 8081), ("127.0.0.2", 8080), ("::1", 8080), ("fd00::5", 80),
        ("192.168.1.6", 22), ("172.20.0.1", 9001), ("11.0.0.1", 80), ("::ffff:127.0.0.1", 80),
    ]  # fmt: skip
    for address, port in yes:
        assert allow.permits(ip(address), port), (address, port)
    for address, port in no:
        assert not allow.permits(ip(address), port), (address, port)


def test_empty_allowlist_permits_nothing() -> None:
    assert not parse_allowlist([]).permits(ip("127.0.0.1"), 80)
    assert not AllowList().permits(ip("8.8.8.8"), 80)


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.1/8", "localhost", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:http", "[::1",
     "[::1]8080", "[::1]:", "::1]:80", "1.2.3.4/33", "10.0.0.0/8:", "*"],
)  # fmt: skip
def test_bad_allowlist_entry_is_a_config_error_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_allowlist(["10.0.0.0/8", entry])
    assert repr(entry) in str(info.value)


def test_check_address() -> None:
    allow = parse_allowlist(["127.0.0.1:8080"])
    check_address(ip("8.8.8.8"), 443, allow)
    check_address(ip("127.0.0.1"), 8080, allow)
    with pytest.raises(FetchError) as info:
        check_address(ip("127.0.0.1"), 8081, allow)
    assert info.value.code == "private_address" and "127.0.0.1:8081" in str(info.value)
    with pytest.raises(FetchError) as v6:
        check_address(ip("::1"), 80, AllowList())
    assert v6.value.code == "private_address" and "[::1]:80" in str(v6.value)


# -- Retry-After and cache lifetime -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("-5", 0.0),
        ("1.5", 1.5),
        (NOW_HTTP, 0.0),
        ("Fri, 01 May 2026 12:02:00 GMT", 120.0),
        ("Friday, 01-May-26 12:01:00 GMT", 60.0),
        ("Fri May  1 12:00:30 2026", 30.0),
        ("Fri, 01 May 2026 11:00:00 GMT", 0.0),  # in the past
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Fri, 41 May 2026 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_with_a_naive_now_treats_it_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Fri, 01 May 2026 12:02:00 GMT", naive) == 120.0


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0


def later(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"cache-control": "max-age=600"}, 600.0),
        ({"Cache-Control": "public, max-age=600", "Age": "100"}, 500.0),
        ({"cache-control": "max-age=60", "age": "100"}, 0.0),
        ({"cache-control": 's-maxage="300"'}, 300.0),
        ({"cache-control": "max-age=600, s-maxage=60"}, 600.0),
        ({"cache-control": "max-age=abc"}, 0.0),
        ({"cache-control": "no-store, max-age=600"}, None),
        ({"cache-control": "No-Cache"}, None),
        ({"cache-control": "max-age=600", "expires": later(60)}, 600.0),
        ({"expires": later(3600)}, 3600.0),
        ({"expires": later(3600), "date": later(600)}, 3000.0),
        ({"expires": later(3600), "date": "garbage"}, 3600.0),
        ({"expires": later(3600), "age": "600"}, 3000.0),
        ({"expires": later(-60)}, 0.0),
        ({"expires": "0"}, 0.0),
        ({"cache-control": "public", "expires": later(30)}, 30.0),
    ],
)
def test_parse_cache_lifetime(headers: dict[str, str], expected: float | None) -> None:
    assert parse_cache_lifetime(headers, NOW) == expected


def test_parse_http_date() -> None:
    assert parse_http_date(NOW_HTTP) == NOW
    assert parse_http_date("Fri May  1 12:00:00 2026") == NOW
    assert parse_http_date("yesterday") is None
