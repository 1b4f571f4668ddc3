"""The one outbound HTTP chokepoint: conditional GET with limits, failures as stable codes."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol
from urllib.parse import unquote

import aiohttp
from yarl import URL

from services.config import Settings
from services.core.errors import FetchError
from services.core.httpdates import parse_http_date, parse_retry_after
from services.core.netpolicy import AllowList, check_address, literal_host_ip, parse_allowlist
from services.net_guard import find_refusal, guarded_connector

USER_AGENT = "newsdesk/0.1 (+https://github.com/newsdesk)"
MAX_REDIRECTS = 5
ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_STATUSES = frozenset({301, 308})
CHUNK_BYTES = 64 * 1024
MAX_DETAIL = 300  # characters of a foreign error kept in the stored detail
# Response headers worth keeping (scheduling hints, validators, diagnostics).
KEPT_HEADERS = (
    "age",
    "cache-control",
    "content-encoding",
    "content-length",
    "content-location",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "retry-after",
)

ConnectorFactory = Callable[[], aiohttp.BaseConnector]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class HTTPStatusError(FetchError):
    """The server answered with a 4xx/5xx status (``code`` is ``http_<status>``).

    ``retry_after`` is the raw header; ``retry_after_seconds`` the delay it asks for (counted
    from the response's ``Date``), or None without a usable header.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, code=f"http_{status}")
        self.status = status
        self.retry_after = retry_after
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class FetchResult:
    """A 200 (body read, decompressed, within the cap) or a 304 (empty body)."""

    status: int
    body: bytes
    final_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None
    retry_after_seconds: float | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class SupportsFetch(Protocol):
    """The port the poller depends on (tests may pass a fake)."""

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult: ...


class Fetcher:
    """Owns one ``aiohttp.ClientSession``; use as ``async with Fetcher(settings) as f``.

    Every connection goes through ``guarded_connector`` (unless ``connector_factory`` replaces
    it), so only public or ``fetch_allow``-listed addresses are dialled, on every hop.
    ``resolver`` replaces the system resolver in that connector (tests, the bench).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        connector_factory: ConnectorFactory | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._total = settings.http_timeout
        self._max_bytes = settings.max_body_bytes
        self._allow: AllowList = parse_allowlist(settings.fetch_allow)
        self._connector_factory: ConnectorFactory = connector_factory or (
            lambda: guarded_connector(settings, resolver=resolver)
        )
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        step = min(10.0, self._total)
        self._session = aiohttp.ClientSession(
            connector=self._connector_factory(),
            timeout=aiohttp.ClientTimeout(total=self._total, connect=step, sock_read=step),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # no proxy or .netrc taken from the environment
            auto_decompress=True,
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

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """GET ``url``, following at most ``MAX_REDIRECTS`` http(s) redirects.

        Returns a 200 with its decompressed body or a 304. Raises FetchError with code
        ``timeout``, ``connection_error``, ``tls_error``, ``bad_response``, ``bad_url``,
        ``bad_scheme``, ``private_address`` (a literal or dialled address that is not public
        nor allowlisted), ``too_many_redirects``, ``too_large``, or HTTPStatusError
        (``http_<status>``) for any other status.
        """
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            # The session's total timeout is per hop; this bounds the whole chain.
            async with asyncio.timeout(self._total):
                return await self._follow(self._checked_url(url), headers)
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(
                f"no complete answer within {self._total:g} s", code="timeout"
            ) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise FetchError(f"TLS failure: {_brief(exc)}", code="tls_error") from None
        except aiohttp.InvalidURL as exc:
            raise FetchError(f"invalid URL: {_brief(exc)}", code="bad_url") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise FetchError(f"malformed response: {_brief(exc)}", code="bad_response") from None
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                raise FetchError(_brief(refusal), code="private_address") from None
            raise FetchError(
                f"{type(exc).__name__}: {_brief(exc)}", code="connection_error"
            ) from None

    async def _follow(self, url: URL, headers: dict[str, str]) -> FetchResult:
        if self._session is None:
            raise RuntimeError("Fetcher used outside 'async with'")
        permanent: str | None = None
        still_permanent = True  # only a chain of 301/308 from the start moves the feed
        for hop in range(MAX_REDIRECTS + 1):
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status not in REDIRECT_STATUSES or not location:
                    return replace(await self._finish(resp), permanent_redirect=permanent)
                if hop == MAX_REDIRECTS:
                    break
                url = self._checked_url(resp.url.join(URL(location)))
                still_permanent = still_permanent and resp.status in PERMANENT_STATUSES
                if still_permanent:
                    permanent = str(url)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects", code="too_many_redirects")

    async def _finish(self, resp: aiohttp.ClientResponse) -> FetchResult:
        kept = {k: resp.headers[k] for k in KEPT_HEADERS if k in resp.headers}
        retry_after = kept.get("retry-after")
        delay = None if retry_after is None else self._retry_after_seconds(retry_after, kept)
        if resp.status not in (200, 304):
            raise HTTPStatusError(
                resp.status,
                f"HTTP {resp.status} {resp.reason or ''}".strip(),
                retry_after=retry_after,
                retry_after_seconds=delay,
            )
        body = b"" if resp.status == 304 else await self._read_capped(resp)
        return FetchResult(
            status=resp.status,
            body=body,
            final_url=str(resp.url),
            headers=kept,
            etag=kept.get("etag"),
            last_modified=kept.get("last-modified"),
            retry_after_seconds=delay,
        )

    def _retry_after_seconds(self, value: str, headers: Mapping[str, str]) -> float | None:
        # An HTTP-date counts from the server's own Date, so clock skew does not matter.
        date = parse_http_date(headers["date"]) if "date" in headers else None
        return parse_retry_after(value, date or self._clock())

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        """The decompressed body, aborted as soon as it passes ``max_body_bytes``."""
        cap = self._max_bytes
        if resp.content_length is not None and resp.content_length > cap:
            resp.close()
            raise FetchError(
                f"declared Content-Length {resp.content_length} exceeds {cap} bytes",
                code="too_large",
            )
        body = bytearray()
        # aiohttp >= 3.13.3 inflates in bounded steps, so each chunk is small even for a
        # gzip bomb; counting here caps the memory a response can take.
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            body += chunk
            if len(body) > cap:
                resp.close()
                raise FetchError(f"body exceeds {cap} bytes (decompressed)", code="too_large")
        return bytes(body)

    def _checked_url(self, url: str | URL) -> URL:
        """``url`` parsed, if http(s) with a host that is not a refused IP literal.

        Literal and encoded IPs (``127.1``, ``0x7f.1``, ``[::ffff:127.0.0.1]``) are refused
        here, before any connection; names are left to the connect-time guard.
        """
        parsed = _parsed_url(url)
        # Browsers percent-decode the host before reading it as an IPv4 address.
        ip = literal_host_ip(unquote(parsed.raw_host or ""))
        if ip is not None:
            check_address(ip, parsed.port or 0, self._allow)
        return parsed


def _brief(exc: BaseException | str) -> str:
    """An exception's text cut to ``MAX_DETAIL`` chars: aiohttp quotes whole bad lines."""
    text = str(exc)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _parsed_url(url: str | URL) -> URL:
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"invalid URL {str(url)[:200]!r}: {exc}", code="bad_url") from None
    if parsed.scheme.lower() not in ALLOWED_SCHEMES:
        raise FetchError(f"scheme {parsed.scheme!r} is not http or https", code="bad_scheme")
    if not parsed.host:
        raise FetchError(f"URL {str(url)[:200]!r} has no host", code="bad_url")
    return parsed
