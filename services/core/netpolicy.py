"""Outbound address policy: which IPs a fetch may reach, the allowlist, encoded IPv4 hosts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from services.core.errors import ConfigError, FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IPv4 ranges that are never a public web server (IANA special-purpose registry, RFC 6890).
BLOCKED_V4: tuple[ipaddress.IPv4Network, ...] = (
    _V4("0.0.0.0/8"),  # "this network", includes the unspecified 0.0.0.0
    _V4("10.0.0.0/8"),  # RFC 1918
    _V4("100.64.0.0/10"),  # CGNAT shared space
    _V4("127.0.0.0/8"),  # loopback
    _V4("169.254.0.0/16"),  # link-local, cloud metadata
    _V4("172.16.0.0/12"),  # RFC 1918
    _V4("192.0.0.0/24"),  # IETF protocol assignments
    _V4("192.0.2.0/24"),  # TEST-NET-1
    _V4("192.88.99.0/24"),  # deprecated 6to4 relay anycast
    _V4("192.168.0.0/16"),  # RFC 1918
    _V4("198.18.0.0/15"),  # benchmarking
    _V4("198.51.100.0/24"),  # TEST-NET-2
    _V4("203.0.113.0/24"),  # TEST-NET-3
    _V4("224.0.0.0/4"),  # multicast
    _V4("240.0.0.0/4"),  # reserved, includes broadcast 255.255.255.255
)

# IPv6 outside 2000::/3 is not global unicast (::, ::1, fc00::/7, fe80::/10, ff00::/8, 100::/64,
# 64:ff9b:1::/48, ...). These are the non-public ranges inside it.
GLOBAL_UNICAST = _V6("2000::/3")
BLOCKED_V6: tuple[ipaddress.IPv6Network, ...] = (
    _V6("2001::/23"),  # IETF protocol assignments (Teredo is unwrapped before this check)
    _V6("2001:db8::/32"),  # documentation
    _V6("3fff::/20"),  # documentation (RFC 9637)
)
TEREDO = _V6("2001::/32")
NAT64 = _V6("64:ff9b::/96")
IPV4_COMPATIBLE = _V6("::/96")  # deprecated ::a.b.c.d, also holds :: and ::1
IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT, RFC 2765


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 form carries and may end up reaching (empty if none)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client)
    if ip in NAT64 or ip in IPV4_COMPATIBLE or ip in IPV4_TRANSLATED:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address a feed may live on.

    IPv6 forms that embed an IPv4 address (mapped, compatible, translated, 6to4, NAT64,
    Teredo) are judged by the IPv4 addresses they carry.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in BLOCKED_V4)
    inner = embedded_ipv4(ip)
    if inner:
        return all(is_public(v4) for v4 in inner)
    if ip not in GLOBAL_UNICAST:
        return False
    return not any(ip in net for net in BLOCKED_V6)


@dataclass(frozen=True)
class AllowRule:
    """One allowlist entry: a network, and optionally the only port it opens."""

    network: IPNetwork
    port: int | None = None

    def matches(self, ip: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return ip.version == self.network.version and ip in self.network


@dataclass(frozen=True)
class AllowList:
    """Private networks (and ports) an operator opened to fetches; empty by default."""

    rules: tuple[AllowRule, ...] = ()

    def permits(self, ip: IPAddress, port: int) -> bool:
        """Whether ``ip``:``port`` is opened by an entry (an IPv4-mapped IPv6 counts as IPv4)."""
        candidates: tuple[IPAddress, ...] = (ip,)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates = (ip, ip.ipv4_mapped)
        return any(rule.matches(c, port) for rule in self.rules for c in candidates)


def parse_allowlist(entries: Iterable[str]) -> AllowList:
    """Parse ``NEWSDESK_FETCH_ALLOW`` entries.

    Each entry is a CIDR or address, optionally with a port: ``10.0.0.0/8``,
    ``127.0.0.1:8080``, ``::1``, ``[::1]:8080``, ``[fd00::/8]:443``. Blank entries are skipped.

    Raises:
        ConfigError: naming the first malformed entry (host bits set, bad port, not an IP).
    """
    rules = []
    for raw in entries:
        entry = raw.strip()
        if entry:
            rules.append(_parse_rule(entry))
    return AllowList(tuple(rules))


def _parse_rule(entry: str) -> AllowRule:
    network_text, port_text = _split_port(entry)
    try:
        network = ipaddress.ip_network(network_text, strict=True)
    except ValueError as exc:
        raise ConfigError(f"NEWSDESK_FETCH_ALLOW entry {entry!r}: {exc}") from None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"NEWSDESK_FETCH_ALLOW entry {entry!r}: bad port {port_text!r}")
        port = int(port_text)
    return AllowRule(network, port)


def _split_port(entry: str) -> tuple[str, str | None]:
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"NEWSDESK_FETCH_ALLOW entry {entry!r}: expected [IPv6]:port")
        return inside, (rest[1:] if rest else None)
    if entry.count(":") == 1:  # IPv4 (or IPv4 CIDR) with a port
        host, _, port = entry.partition(":")
        return host, port
    return entry, None  # IPv4 without port, or bare IPv6


def check_address(ip: IPAddress, port: int, allow: AllowList) -> None:
    """Refuse a connection to ``ip``:``port`` unless it is public or allowlisted.

    Raises:
        FetchError: code ``private_address``, naming the address.
    """
    if allow.permits(ip, port) or is_public(ip):
        return
    shown = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    raise FetchError(f"refused to connect to non-public address {shown}", code="private_address")


def literal_host_ip(host: str) -> IPAddress | None:
    """The IP address a URL host names literally, or None for a DNS name.

    Besides dotted quads and IPv6 (bracketed or not, zone dropped) this decodes the IPv4
    spellings libc's ``inet_aton`` and browsers accept: 1 to 4 parts, each decimal, octal
    (leading ``0``) or hex (``0x``), the last part filling the remaining bytes, e.g.
    ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``017700000001``, ``127.1``.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    return _inet_aton(text[:-1] if text.endswith(".") else text)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_part(part) for part in parts]
    value = 0
    for number in numbers[:-1]:
        if number is None or number > 0xFF:
            return None
        value = value << 8 | number
    last = numbers[-1]
    width = 8 * (5 - len(parts))
    if last is None or last >= 1 << width:
        return None
    return ipaddress.IPv4Address(value << width | last)


def _ipv4_part(part: str) -> int | None:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
        if not digits:
            return 0  # "0x" alone is zero for inet_aton and the WHATWG URL parser
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    allowed = "0123456789abcdef"[:base]
    if not digits or any(ch not in allowed for ch in digits):
        return None
    return int(digits, base)
