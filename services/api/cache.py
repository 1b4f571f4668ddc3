"""Per-process cache of the read routes' JSON responses, with ETag and ``If-None-Match``.

The cached routes (:data:`CACHED_ROUTES`) read only articles, entities, stories and the feed
fields shown with them. An entry remembers the data version (:mod:`services.dataversion`)
read before its body was built and is served only while that version is still the current
one and it is younger than ``NEWSDESK_API_CACHE_SECONDS``: every writer bumps the version
after committing, and the age limit bounds what a lost bump (or a write made outside newsdesk)
can cost. The current version comes with the rate-limit round trip (the gate stores it on the
request); a request without one (Redis failed) neither reads nor fills the cache.

The cache sits after the gate, so authentication, scopes and the rate limit apply to every
request it answers. Entries are kept in least-recently-used order within a byte budget. When
several requests miss the same entry at once, one builds it and the others wait for it.

Every ``200`` of a cached route carries a strong ``ETag`` (a hash of the body) and
``Cache-Control: no-cache``; an ``If-None-Match`` naming the current ETag answers ``304``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from services import dataversion, metrics
from services.api.context import DATA_VERSION, REDIS, SETTINGS

log = logging.getLogger(__name__)

CACHED_ROUTES = frozenset(
    {"/v1/articles", "/v1/articles/{id}", "/v1/entities", "/v1/entities/{id}", "/v1/stories/{id}"}
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CACHE_CONTROL = "no-cache"  # clients may keep a copy but revalidate it (If-None-Match)
# Bytes an entry costs beyond its body: key, headers, ETag and bookkeeping, roughly.
ENTRY_OVERHEAD = 512
# One entry may take at most this share of the budget, so one big body cannot empty it.
MAX_ENTRY_SHARE = 4
KEPT_HEADERS = ("Content-Type", "Link")

Key = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Entry:
    """One response: body, the headers it depends on, its ETag, version and build time."""

    body: bytes
    headers: tuple[tuple[str, str], ...]
    etag: str
    version: bytes
    stored_at: float

    @property
    def size(self) -> int:
        return len(self.body) + ENTRY_OVERHEAD


class ResponseCache:
    """An LRU of :class:`Entry` bounded in bytes; ``max_bytes`` 0 keeps nothing.

    ``counts`` holds this process's outcomes: ``hit``, ``miss``, ``bypass`` (no version
    known, or the cache is off) and ``not_modified`` (the 304s among them).
    """

    def __init__(
        self, max_bytes: int, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.size = 0
        self.counts: Counter[str] = Counter()
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._newest = -1  # the highest data version seen
        self._building: dict[tuple[Key, bytes], asyncio.Future[Entry | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, version: bytes) -> Entry | None:
        """The entry of ``key`` if it was built at ``version`` and has not expired.

        A version lower than one seen before means Redis lost the counter (a restart without
        persistence): every entry goes, since the counter may climb back to their versions.
        """
        seen = int(version) if version.isdigit() else -1
        if seen < self._newest:
            self.clear()
        self._newest = seen
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version or self.clock() - entry.stored_at >= self.ttl:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, entry: Entry) -> None:
        """Keep ``entry``, evicting the least recently used ones beyond the budget."""
        if entry.size * MAX_ENTRY_SHARE > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = entry
        self.size += entry.size
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old.size

    async def build(
        self, key: Key, version: bytes, make: Callable[[], Awaitable[Entry | None]]
    ) -> tuple[Entry | None, bool]:
        """The entry ``make`` builds, stored; while the same entry is being built by another
        request, wait for that one instead. Returns (entry or None, whether this call built it).
        """
        slot = (key, version)
        waiting = self._building.get(slot)
        if waiting is not None:
            entry = await asyncio.shield(waiting)
            if entry is not None:
                return entry, False
        future: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._building[slot] = future
        entry = None
        try:
            entry = await make()
        finally:
            if self._building.get(slot) is future:
                del self._building[slot]
            future.set_result(entry)  # None after a failure: the waiters run their own
        if entry is not None:
            self.put(key, entry)
        return entry, True


CACHE = web.AppKey("response_cache", ResponseCache)


# Seconds between two flushes of a process's cache outcome counts to the metrics hash.
COUNTS_INTERVAL = 10.0
COUNTS_METRIC = "newsdesk_api_cache_total"


async def cache_resources(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: this process's response cache, and the task that adds its outcome
    counts to ``/metrics`` every ``COUNTS_INTERVAL`` seconds (and once more at shutdown)."""
    settings = app[SETTINGS]
    cache = app[CACHE] = ResponseCache(
        settings.api_cache_mb * 1024 * 1024, settings.api_cache_seconds
    )
    flushed: Counter[str] = Counter()
    task = asyncio.create_task(_report_counts(app, cache, flushed))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await flush_counts(app[REDIS], cache, flushed)


async def _report_counts(app: web.Application, cache: ResponseCache, flushed: Counter[str]) -> None:
    while True:
        await asyncio.sleep(COUNTS_INTERVAL)
        await flush_counts(app[REDIS], cache, flushed)


async def flush_counts(client: Any, cache: ResponseCache, flushed: Counter[str]) -> None:
    """Add the outcomes counted since the last flush to the metrics hash, in one round trip
    (never per request); a failure keeps them for the next flush."""
    delta = {o: n - flushed[o] for o, n in cache.counts.items() if n > flushed[o]}
    if not delta:
        return
    try:
        async with client.pipeline(transaction=False) as pipe:
            for outcome, n in delta.items():
                pipe.hincrby(metrics.KEY, metrics.sample(COUNTS_METRIC, {"outcome": outcome}), n)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("api.cache_counts_not_flushed error=%s", type(exc).__name__)
        return
    flushed.update(delta)


def cacheable(request: web.Request) -> bool:
    """True for a GET of one of the cached routes."""
    if request.method != "GET":
        return False
    route = request.match_info.route.resource
    return route is not None and route.canonical in CACHED_ROUTES


def cache_key(request: web.Request) -> Key:
    """Path and raw query pairs ordered by name: ``?a=1&b=2`` and ``?b=2&a=1`` share an entry,
    repeated parameters (``entity``) keep their order. Raw, so that two query strings differing
    only in bytes the handler refuses (not UTF-8) never share an entry with a valid one."""
    pairs = request.rel_url.raw_query_string.split("&")
    ordered = sorted(pairs, key=lambda pair: pair.partition("=")[0])
    return request.rel_url.raw_path, tuple(ordered)


def etag_of(body: bytes) -> str:
    """A strong ETag: a hash of the exact body."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 wants) or is *."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def _entry(response: web.StreamResponse, version: bytes, now: float) -> Entry | None:
    """The response as an entry when it can be one: a 200 with its body in memory."""
    if type(response) is not web.Response or response.status != 200:
        return None
    body = response.body
    if not isinstance(body, bytes):
        return None
    headers = tuple(
        (name, response.headers[name]) for name in KEPT_HEADERS if name in response.headers
    )
    return Entry(body, headers, etag_of(body), version, now)


def _answer(request: web.Request, entry: Entry, cache: ResponseCache) -> web.Response:
    validators = {"ETag": entry.etag, "Cache-Control": CACHE_CONTROL}
    if matches(request.headers.get("If-None-Match"), entry.etag):
        cache.counts["not_modified"] += 1
        return web.Response(status=304, headers=validators)
    return web.Response(body=entry.body, headers={**dict(entry.headers), **validators})


async def _cached_get(
    request: web.Request, handler: Handler, cache: ResponseCache
) -> web.StreamResponse:
    version = request.get(DATA_VERSION)
    if not cache.enabled or version is None:
        cache.counts["bypass"] += 1
        response = await handler(request)
        entry = _entry(response, b"", cache.clock())
        return response if entry is None else _answer(request, entry, cache)
    key = cache_key(request)
    entry = cache.get(key, version)
    if entry is not None:
        cache.counts["hit"] += 1
        return _answer(request, entry, cache)
    built: list[web.StreamResponse] = []

    async def run() -> Entry | None:
        cache.counts["miss"] += 1
        response = await handler(request)
        built.append(response)
        return _entry(response, version, cache.clock())

    entry, own = await cache.build(key, version, run)
    if entry is None:  # not cacheable (an error, a redirect): this request's own answer
        return built[0]
    if not own:
        cache.counts["hit"] += 1  # built by a request that was already building it
    return _answer(request, entry, cache)


async def _bump(request: web.Request) -> None:
    """After a successful write: bump the data version for every process's cache."""
    try:
        await dataversion.bump(request.app[REDIS])
    except (RedisError, OSError) as exc:
        # This process at least stops serving what the write may have changed; the others'
        # entries expire within NEWSDESK_API_CACHE_SECONDS.
        request.app[CACHE].clear()
        log.warning("api.data_version_not_bumped error=%s", type(exc).__name__)


@web.middleware
async def cache_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer cached routes from the cache; bump the data version after successful writes."""
    if request.method not in SAFE_METHODS:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if 200 <= exc.status < 300:
                await _bump(request)
            raise
        if 200 <= response.status < 300:
            await _bump(request)
        return response
    if not cacheable(request):
        return await handler(request)
    return await _cached_get(request, handler, request.app[CACHE])
