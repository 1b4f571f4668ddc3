"""The gate every API request passes: body size, bearer API key, scope, then rate limit.

- Probes and documents (``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``, ``/docs``)
  are open to everyone.
- A write (any method but GET, HEAD and OPTIONS) needs a key with the ``write`` scope; a read
  needs ``read``, unless the operator made reads public (``NEWSDESK_PUBLIC_READS``); a key
  sent with a public read must still be valid. ``NEWSDESK_AUTH=off`` turns keys off.
- A verified key is trusted for ``NEWSDESK_AUTH_CACHE`` seconds without asking SQL again, so
  a revoke takes effect within that time in every API process.
- Every admitted request counts against its key's budget, or its address's when anonymous;
  for a GET of a cached route the same round trip reads the data version for the response
  cache (``services/api/cache.py``), which runs after the gate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.orm import Session, sessionmaker

from services import dataversion
from services.api.cache import cacheable
from services.api.context import DATA_VERSION, MAX_REQUEST_BYTES, REDIS, SESSIONS, SETTINGS
from services.api.errors import problem
from services.api.ratelimit import RateLimiter
from services.config import Settings
from services.db.apikeys import (
    PREFIX_CHARS,
    ApiKeyRecord,
    find_by_token,
    hash_token,
    looks_like_token,
    mark_used,
)
from services.db.engine import reading, transaction

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
# last_used_at is written at most this often per key, not once per request.
USE_RECORD_INTERVAL = 60.0
MAX_CACHED_KEYS = 10_000
REALM = 'Bearer realm="newsdesk"'

API_KEY = web.RequestKey("api_key", ApiKeyRecord)


def is_open(path: str) -> bool:
    """True for the routes that answer without a key."""
    return path in OPEN_PATHS or path.startswith("/docs/")


def needed_scope(method: str) -> str:
    return "read" if method.upper() in SAFE_METHODS else "write"


class Gate:
    """Verifies keys (with a short in-process cache), applies the rate limit, notes key use."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        limiter: RateLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.clock = clock
        self._sessions = sessions
        self._cache: dict[str, tuple[ApiKeyRecord, float]] = {}
        self._recorded: dict[int, float] = {}

    async def verify(self, token: str) -> ApiKeyRecord | None:
        """The key of ``token`` (revoked ones included), or None when it is no key of ours."""
        if not looks_like_token(token):
            return None
        digest = hash_token(token)
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = await asyncio.to_thread(self._find, token)
        if record is not None and self.settings.auth_cache > 0:
            self._remember(digest, record, now)
        return record

    def _find(self, token: str) -> ApiKeyRecord | None:
        with reading(self._sessions) as session:
            return find_by_token(session, token)

    def _remember(self, digest: str, record: ApiKeyRecord, now: float) -> None:
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache = {d: e for d, e in self._cache.items() if e[1] > now}
            while len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = (record, now + self.settings.auth_cache)

    async def record_use(self, key: ApiKeyRecord) -> None:
        """Write ``last_used_at``, at most once a minute per key and process.

        Awaited before the handler runs, so the request's own writes do not queue behind it.
        """
        now = self.clock()
        last = self._recorded.get(key.id)
        if last is not None and now - last < USE_RECORD_INTERVAL:
            return
        self._recorded[key.id] = now
        await asyncio.to_thread(self._mark, key.id)

    def _mark(self, key_id: int) -> None:
        try:
            with transaction(self._sessions) as session:
                mark_used(
                    session,
                    key_id,
                    now=datetime.now(UTC),
                    every=timedelta(seconds=USE_RECORD_INTERVAL),
                )
        except Exception as exc:
            # Bookkeeping only: the request goes on without it.
            log.warning("api.key_use_not_recorded key_id=%s reason=%s", key_id, type(exc).__name__)


GATE = web.AppKey("gate", Gate)


async def gate_resources(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` (after the engine and Redis exist): the app's gate."""
    settings = app[SETTINGS]
    limiter = RateLimiter(
        app[REDIS],
        limit=settings.rate_limit,
        window=settings.rate_window,
        version_key=dataversion.KEY if settings.api_cache_mb > 0 else None,
    )
    app[GATE] = Gate(settings, app[SESSIONS], limiter)
    yield


def _unauthorized(detail: str, *, invalid: bool) -> web.Response:
    challenge = f'{REALM}, error="invalid_token"' if invalid else REALM
    code = "invalid_key" if invalid else "unauthorized"
    return problem(
        401, code, detail, param="Authorization", headers={"WWW-Authenticate": challenge}
    )


def _forbidden(scope: str, key: ApiKeyRecord) -> web.Response:
    has = ", ".join(sorted(key.scopes)) or "none"
    return problem(
        403,
        "insufficient_scope",
        f"this request needs an API key with the `{scope}` scope; key {key.prefix} has: {has}",
        headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
        extra={"required_scope": scope},
    )


def _refused(request: web.Request, reason: str, prefix: str = "-") -> None:
    log.info(
        "api.auth_refused reason=%s key=%s method=%s path=%s remote=%s",
        reason, prefix, request.method, request.path[:200], request.remote,
    )  # fmt: skip


async def _authenticate(
    request: web.Request, gate: Gate, scope: str
) -> ApiKeyRecord | web.Response | None:
    """The request's key, None for an admitted anonymous request, or the refusal to send."""
    header = request.headers.get("Authorization")
    if header is None:
        if scope == "read" and gate.settings.public_reads:
            return None
        _refused(request, "no_key")
        return _unauthorized(
            "this request needs an API key: send `Authorization: Bearer <key>` "
            "(`newsdesk keys create` makes one)",
            invalid=False,
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    key = await gate.verify(token) if scheme.lower() == "bearer" else None
    if key is None or not key.active:
        shown = token[:PREFIX_CHARS] if looks_like_token(token) else "-"
        _refused(request, "revoked_key" if key else "invalid_key", shown)
        what = "was revoked" if key else "is not a valid newsdesk API key"
        return _unauthorized(f"the bearer token {what}", invalid=True)
    if scope not in key.scopes:
        _refused(request, "insufficient_scope", key.prefix)
        return _forbidden(scope, key)
    return key


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse oversized bodies (413), missing or bad keys (401), scopes (403), floods (429)."""
    if is_open(request.path):
        return await handler(request)
    scope = needed_scope(request.method)
    if scope == "write" and (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, request.content_length or 0)
    gate = request.app[GATE]
    key: ApiKeyRecord | None = None
    if gate.settings.auth:
        found = await _authenticate(request, gate, scope)
        if isinstance(found, web.Response):
            return found
        key = found
    client = f"key:{key.id}" if key else f"ip:{request.remote}"
    verdict = await gate.limiter.hit(client, version=cacheable(request))
    if not verdict.allowed:
        log.info("api.rate_limited client=%s path=%s", client, request.path[:200])
        return problem(
            429,
            "rate_limited",
            f"more than {verdict.limit} requests in {gate.settings.rate_window:g} s; "
            f"retry in {verdict.reset_after} s",
            headers={"Retry-After": str(verdict.reset_after)},
            extra={"limit": verdict.limit, "window": gate.settings.rate_window},
        )
    if verdict.version is not None:
        request[DATA_VERSION] = verdict.version
    if key is not None:
        request[API_KEY] = key
        await gate.record_use(key)
    if scope == "write" and request.body_exists:
        # A body without Content-Length (chunked) is measured here, before any handler runs;
        # aiohttp refuses it past ``client_max_size`` (413) and keeps it for the handler.
        await request.read()
    return await handler(request)
