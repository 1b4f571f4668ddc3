"""POST one signed webhook through the SSRF-guarded connector; every failure a stable code.

The connector is the poller's (``services.net_guard.guarded_connector``): the address
actually dialled is checked on every connection, so a subscriber's name that starts
resolving to a private address after registration is refused at delivery. Redirects are
never followed: a 3xx is a failed attempt (``http_3xx``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import unquote

import aiohttp
from yarl import URL

from services.config import Settings
from services.core.errors import FetchError, InvalidInput
from services.core.feedurl import normalise_feed_url
from services.core.httpdates import parse_retry_after
from services.core.netpolicy import AllowList, check_address, literal_host_ip, parse_allowlist
from services.net_guard import find_refusal, guarded_connector
from services.webhooks import signing
from services.webhooks.schedule import AttemptResult

USER_AGENT = "newsdesk-webhooks/0.1 (+https://github.com/newsdesk)"
EXCERPT_BYTES = 1024
EXCERPT_CHARS = 200
MAX_DETAIL = 300
# Subscriber URLs whose parsed form (literal addresses checked) is kept; few in practice.
CHECKED_URLS = 4096


def _brief(exc: BaseException | str) -> str:
    text = str(exc)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


class Sender:
    """Owns one ``aiohttp.ClientSession`` (connections kept alive between deliveries).

    Use as ``async with Sender(settings) as sender``. ``resolver`` replaces the system
    resolver (tests map names to loopback with it).
    """

    def __init__(
        self, settings: Settings, *, resolver: aiohttp.abc.AbstractResolver | None = None
    ) -> None:
        self._settings = settings
        self._allow = parse_allowlist(settings.fetch_allow)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._checked_urls: dict[str, URL] = {}

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(
            connector=guarded_connector(self._settings, resolver=self._resolver),
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, url: str, *, msg_id: str, body: bytes, secrets: Iterable[str], now: datetime
    ) -> AttemptResult:
        """POST ``body`` signed with every secret in ``secrets``; never raises for the
        subscriber's failures (they are the result's ``error_code``)."""
        if self._session is None:
            raise RuntimeError("Sender used outside 'async with'")
        timestamp = int(now.timestamp())
        headers = signing.headers(secrets, msg_id=msg_id, timestamp=timestamp, body=body)
        started = time.monotonic()

        def done(status: int | None = None, **kw: object) -> AttemptResult:
            ms = int((time.monotonic() - started) * 1000)
            return AttemptResult(status_code=status, latency_ms=ms, **kw)  # type: ignore[arg-type]

        try:
            target = self._checked(url)
            async with self._session.post(
                target, data=body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(EXCERPT_BYTES)
                excerpt = raw.decode("utf-8", "replace")[:EXCERPT_CHARS] or None
                status = resp.status
                if 200 <= status < 300:
                    return done(status, excerpt=excerpt)
                retry_after = None
                if status in (429, 503) and "Retry-After" in resp.headers:
                    retry_after = parse_retry_after(resp.headers["Retry-After"], datetime.now(UTC))
                detail = f"HTTP {status} {resp.reason or ''}".strip()
                if 300 <= status < 400:
                    where = resp.headers.get("Location", "?")[:200]
                    detail += f" (redirect to {where} not followed)"
                return done(
                    status,
                    error_code=f"http_{status}",
                    error_detail=detail,
                    excerpt=excerpt,
                    retry_after_seconds=retry_after,
                )
        except FetchError as exc:
            return done(error_code=exc.code, error_detail=_brief(exc))
        except TimeoutError:
            limit = self._settings.webhook_timeout
            return done(error_code="timeout", error_detail=f"no answer within {limit:g} s")
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return done(error_code="tls_error", error_detail=f"TLS failure: {_brief(exc)}")
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                return done(error_code="private_address", error_detail=_brief(refusal))
            return done(
                error_code="connection_error", error_detail=f"{type(exc).__name__}: {_brief(exc)}"
            )

    def _checked(self, url: str) -> URL:
        """``url`` parsed, after the check of a literal address (a name is checked when the
        connection is made, with every address it resolves to then)."""
        found = self._checked_urls.get(url)
        if found is not None:
            return found
        parsed = URL(url)
        ip = literal_host_ip(unquote(parsed.raw_host or ""))
        if ip is not None:
            check_address(ip, parsed.port or 0, self._allow)
        if len(self._checked_urls) >= CHECKED_URLS:
            self._checked_urls.clear()
        self._checked_urls[url] = parsed
        return parsed


async def check_destination(
    url: object,
    allow: AllowList,
    *,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> str:
    """The normalised URL if a webhook may be registered for it, else InvalidInput.

    Same rules as the delivery: http(s) only, no credentials, and every address the host
    names or resolves to must be public or allowlisted (the delivery checks again at connect
    time, since DNS answers change).

    Raises:
        InvalidInput: param ``url``; code ``invalid_url``, ``private_address`` or
            ``unresolvable``.
    """
    normalised = normalise_feed_url(url)
    parsed = URL(normalised)
    host = unquote(parsed.raw_host or "")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    ip = literal_host_ip(host)
    try:
        if ip is not None:
            check_address(ip, port, allow)
            return normalised
        for address in await _resolve(host, port, resolver):
            ip = literal_host_ip(address)
            if ip is None:
                raise FetchError(f"{host} resolves to {address!r}", code="private_address")
            check_address(ip, port, allow)
    except FetchError as exc:
        raise InvalidInput(
            f"webhook URL refused: {exc} (only public addresses can receive webhooks)",
            param="url",
            code="private_address",
        ) from None
    return normalised


async def _resolve(
    host: str, port: int, resolver: aiohttp.abc.AbstractResolver | None
) -> list[str]:
    try:
        if resolver is not None:
            return [r["host"] for r in await resolver.resolve(host, port, socket.AF_UNSPEC)]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, aiohttp.ClientError) as exc:
        raise InvalidInput(
            f"webhook URL refused: host {host!r} does not resolve ({_brief(exc)})",
            param="url",
            code="unresolvable",
        ) from None
    return [str(info[4][0]) for info in infos]
