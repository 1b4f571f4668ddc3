"""Connect-time SSRF guard: an aiohttp connector that refuses to dial non-public addresses.

Why the check sits in ``socket_factory`` and not (only) in a resolver:

- aiohttp skips the resolver for IP-literal hosts (``TCPConnector._resolve_host`` returns the
  literal as is), so a filtering resolver never sees ``http://127.0.0.1/`` or
  ``http://[::ffff:127.0.0.1]/``.
- A check made before the request (on the URL, or on one lookup) is undone by redirects and
  by DNS rebinding: the name can resolve to another address when the connection is made.
- ``socket_factory`` is called by aiohappyeyeballs with the very ``addr_info`` about to be
  passed to ``connect()``, for every new connection: every redirect hop, every re-resolution,
  every happy-eyeballs attempt. Refusing there checks what is actually dialled.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType

from services.config import Settings
from services.core.errors import FetchError
from services.core.netpolicy import AllowList, check_address, parse_allowlist

# The refusal's text; also how a refusal is recognised once aiohappyeyeballs has folded
# several attempts into one plain "Multiple exceptions: ..." OSError.
REFUSAL_TEXT = "refused to connect to non-public address"


class AddressRefused(OSError):
    """The guard would not dial this address; ``code`` is ``private_address``."""

    code = "private_address"


def make_socket_factory(allow: AllowList) -> SocketFactoryType:
    """A ``socket_factory`` that creates the socket only for a public or allowlisted address.

    Raises (from the factory):
        AddressRefused: an OSError (``EACCES``), so aiohttp treats it as a failed attempt,
            tries the host's other addresses and finally raises ClientConnectorError with it.
    """

    def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise AddressRefused(errno.EACCES, f"{REFUSAL_TEXT}: address family {family!r}")
        host, port = str(sockaddr[0]), int(sockaddr[1])
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise AddressRefused(errno.EACCES, f"{REFUSAL_TEXT}: {host!r}") from None
        try:
            check_address(ip, port, allow)
        except FetchError as exc:
            raise AddressRefused(errno.EACCES, str(exc)) from None
        return socket.socket(family=family, type=type_, proto=proto)

    return guarded_socket


def guarded_connector(
    settings: Settings,
    *,
    resolver: aiohttp.abc.AbstractResolver | None = None,
    limit: int = 100,
) -> aiohttp.TCPConnector:
    """A TCPConnector whose every connection passes the address policy.

    Args:
        settings: ``fetch_allow`` opens private networks/ports (tests, intranet feeds).
        resolver: replaces the system resolver (tests and the bench map names to loopback).
            A supplied resolver owns caching: aiohttp's DNS cache is turned off so that each
            new connection asks it again, as a rebinding name would be asked.
        limit: connections open at once across all hosts.

    Raises:
        ConfigError: a malformed ``fetch_allow`` entry.
    """
    allow = parse_allowlist(settings.fetch_allow)
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=4,
        resolver=resolver,
        use_dns_cache=resolver is None,
        ttl_dns_cache=10,
        socket_factory=make_socket_factory(allow),
    )


def find_refusal(exc: BaseException) -> str | None:
    """The guard's refusal message if ``exc`` (or what it wraps) is one, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return str(current.strerror or current)
        if isinstance(current, aiohttp.ClientConnectorError):
            if REFUSAL_TEXT in str(current.os_error):
                return str(current.os_error.strerror or current.os_error)
            current = current.os_error
            continue
        if REFUSAL_TEXT in str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return None
