"""Settings: one immutable object built from the environment by each entrypoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.core.errors import ConfigError

DEFAULT_DATA_DIR = ".newsdesk"
EMBEDDED_REDIS_SOCKET = "redis.sock"

# Every environment variable the service reads, with its meaning. The compose-file test checks
# that docker-compose.yml sets nothing outside this table.
ENV_VARS: dict[str, str] = {
    "DATABASE_URL": "SQLAlchemy URL; default: SQLite file in the data directory",
    "REDIS_URL": "Redis URL; default: the embedded server's socket in the data directory",
    "NEWSDESK_DATA_DIR": "directory for the SQLite file and the embedded Redis",
    "NEWSDESK_SEEDS_DIR": "folder source ingested by the poller (empty: none)",
    "NEWSDESK_API_HOST": "address the API listens on",
    "NEWSDESK_API_PORT": "port the API listens on",
    "NEWSDESK_API_PROCESSES": "API server processes started by `newsdesk api`, sharing the port "
    "(`SO_REUSEPORT`, Linux); about one per CPU core",
    "NEWSDESK_WORKERS": "worker processes started by `newsdesk worker` and `newsdesk up`",
    "NEWSDESK_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "NEWSDESK_LOG_FORMAT": "text, json, or auto (text on a terminal, JSON otherwise)",
    "NEWSDESK_FEED_INTERVAL": "seconds between two polls of one feed",
    "NEWSDESK_FOLDER_INTERVAL": "seconds between two scans of the folder source",
    "NEWSDESK_POLL_TICK": "seconds the poller sleeps between looking for due work",
    "NEWSDESK_JOB_TIMEOUT": "seconds an extraction job may run",
    "NEWSDESK_MAINTENANCE_INTERVAL": "seconds between rq maintenance runs (abandoned jobs)",
    "NEWSDESK_HTTP_TIMEOUT": "total seconds for one outbound HTTP request",
    "NEWSDESK_MAX_BODY_BYTES": "cap on the decompressed size of a fetched document",
    "NEWSDESK_MAX_FILE_BYTES": "cap on the size of one file in the folder source",
    "NEWSDESK_EXTRACT_QUEUE": "name of the rq queue for extraction jobs",
    "NEWSDESK_FETCH_ALLOW": "CIDRs (optionally with :port) that outbound fetches may reach "
    "although private, e.g. `10.0.0.0/8, 127.0.0.1:8080, [::1]:8080`",
    "NEWSDESK_FEED_MIN_INTERVAL": "shortest interval between two polls of a feed, seconds",
    "NEWSDESK_FEED_MAX_INTERVAL": "longest interval between two polls of a feed, seconds",
    "NEWSDESK_CACHE_HINT_CAP": "cap on how far <ttl>, Cache-Control and Expires push a poll",
    "NEWSDESK_RETRY_AFTER_CAP": "cap on a server's Retry-After, seconds",
    "NEWSDESK_DISABLE_AFTER": "seconds of uninterrupted errors after which a feed is disabled",
    "NEWSDESK_HOST_CONCURRENCY": "requests in flight to one host, across all pollers",
    "NEWSDESK_HOST_SPACING": "minimum seconds between two requests to one host",
    "NEWSDESK_FETCH_CONCURRENCY": "requests in flight per poller process",
    "NEWSDESK_QUEUE_HIGH_WATER": "extraction queue length at which the poller stops enqueueing",
    "NEWSDESK_SWEEP_INTERVAL": "seconds between the poller's requeues of extraction jobs that "
    "used up their retries (at most 5 times each)",
    "NEWSDESK_WORKER_BATCH": "most extraction jobs a worker process takes at once when they "
    "are waiting (its share of them among the idle processes; their NER runs as one batch); "
    "1 takes one at a time",
    "NEWSDESK_WORKER_MAX_RSS_MB": "a worker process above this resident memory after the jobs "
    "in hand exits and is restarted",
    "NEWSDESK_WEBHOOK_QUEUE": "name of the rq queue for webhook deliveries",
    "NEWSDESK_WEBHOOK_WORKERS": "delivery processes started by `newsdesk deliver` and `up`",
    "NEWSDESK_WEBHOOK_TIMEOUT": "seconds a subscriber has to answer one webhook POST",
    "NEWSDESK_WEBHOOK_SCHEDULE": "comma-separated seconds before each attempt of a delivery "
    "(the first is the initial delay); jittered by 10%",
    "NEWSDESK_WEBHOOK_DISABLE_AFTER": "seconds of uninterrupted delivery failures after which "
    "a subscription is disabled",
    "NEWSDESK_WEBHOOK_CONCURRENCY": "deliveries in flight to one subscription at a time",
    "NEWSDESK_WEBHOOK_BATCH": "deliveries one delivery job sends at once (one process's POSTs "
    "in flight)",
    "NEWSDESK_WEBHOOK_TICK": "seconds the dispatcher sleeps between looks for new events",
    "NEWSDESK_WEBHOOK_LEASE": "seconds a handed-out delivery may take before it is handed out "
    "again (a lost job or a killed worker)",
    "NEWSDESK_WEBHOOK_ROTATION_GRACE": "seconds the previous secret keeps signing after a rotation",
    "NEWSDESK_PUBLIC_URL": "base URL of the API as subscribers reach it, for links in payloads "
    "(empty: links are paths)",
    "NEWSDESK_AUTH": "`on` (default): the API wants a bearer API key; `off`: no authentication, "
    "for trusted networks only",
    "NEWSDESK_PUBLIC_READS": "`true`: GET routes answer without a key (writes still need one)",
    "NEWSDESK_AUTH_CACHE": "seconds a verified API key is trusted without asking the database "
    "again (so a revoke takes effect within this time; 0: every request asks)",
    "NEWSDESK_RATE_LIMIT": "requests per window allowed to one API key (anonymous reads: to one "
    "client address), across every API process; 0: no limit",
    "NEWSDESK_RATE_WINDOW": "seconds of the rate-limit window",
    "NEWSDESK_API_CACHE_MB": "megabytes each API process may use to cache the responses of "
    "the article, entity and story reads; 0: no cache",
    "NEWSDESK_API_CACHE_SECONDS": "longest time a cached API response is served, however "
    "current its data version (the bound when a change was not announced)",
}

# Seconds before each attempt of a webhook delivery: immediately, then 5 s, 5 min, 30 min,
# 2 h, 5 h, 10 h and 10 h after the previous failure (about 28 hours in all).
DEFAULT_WEBHOOK_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    fmt = env.get("NEWSDESK_LOG_FORMAT", "auto").strip().lower() or "auto"
    if fmt not in ("auto", "text", "json"):
        raise ConfigError(f"NEWSDESK_LOG_FORMAT must be auto, text or json: {fmt}")
    return fmt


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"{name} must not hold negative delays, got {raw!r}")
    return values


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true/on or false/off, got {raw!r}")


def normalise_database_url(url: str) -> str:
    """Map the common ``postgres://``/``postgresql://`` forms onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved once per process."""

    data_dir: Path
    database_url: str
    redis_url: str
    seeds_dir: Path | None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_processes: int = 1
    workers: int = 2
    log_level: str = "INFO"
    log_format: str = "auto"
    feed_interval: float = 900.0
    folder_interval: float = 5.0
    poll_tick: float = 1.0
    job_timeout: int = 180
    maintenance_interval: int = 30
    http_timeout: float = 20.0
    max_body_bytes: int = 15 * 1024 * 1024
    max_file_bytes: int = 2 * 1024 * 1024
    extract_queue: str = "newsdesk-extract"
    embedded_redis: bool = field(default=False)
    fetch_allow: tuple[str, ...] = ()
    feed_min_interval: int = 300
    feed_max_interval: int = 86_400
    cache_hint_cap: int = 6 * 3600
    retry_after_cap: int = 6 * 3600
    disable_after: int = 7 * 86_400
    host_concurrency: int = 2
    host_spacing: float = 1.0
    fetch_concurrency: int = 50
    queue_high_water: int = 10_000
    sweep_interval: float = 600.0
    worker_max_rss_mb: int = 1024
    worker_batch: int = 32
    webhook_queue: str = "newsdesk-webhooks"
    webhook_workers: int = 4
    webhook_timeout: float = 15.0
    webhook_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE
    webhook_disable_after: int = 5 * 86_400
    webhook_concurrency: int = 2
    webhook_batch: int = 50
    webhook_tick: float = 0.2
    webhook_lease: float = 120.0
    webhook_rotation_grace: int = 86_400
    public_url: str = ""
    auth: bool = True
    public_reads: bool = False
    auth_cache: float = 5.0
    rate_limit: int = 600
    rate_window: float = 60.0
    api_cache_mb: int = 32
    api_cache_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("NEWSDESK_DATA_DIR", "").strip() or DEFAULT_DATA_DIR).absolute()
        database_url = env.get("DATABASE_URL", "").strip()
        if not database_url:
            database_url = f"sqlite:///{data_dir / 'newsdesk.sqlite3'}"
        redis_url = env.get("REDIS_URL", "").strip()
        embedded = not redis_url
        if embedded:
            redis_url = f"unix://{data_dir / EMBEDDED_REDIS_SOCKET}"
        seeds_raw = env.get("NEWSDESK_SEEDS_DIR")
        seeds_dir = (Path("seeds") if seeds_raw is None else Path(seeds_raw.strip())).absolute()
        level = env.get("NEWSDESK_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"NEWSDESK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR: {level}")
        return cls(
            data_dir=data_dir,
            database_url=normalise_database_url(database_url),
            redis_url=redis_url,
            seeds_dir=None if seeds_raw is not None and not seeds_raw.strip() else seeds_dir,
            api_host=env.get("NEWSDESK_API_HOST", "").strip() or "127.0.0.1",
            api_port=_int(env, "NEWSDESK_API_PORT", 8080, minimum=0),
            api_processes=_int(env, "NEWSDESK_API_PROCESSES", 1, minimum=1),
            workers=_int(env, "NEWSDESK_WORKERS", 2, minimum=1),
            log_level=level,
            log_format=_log_format(env),
            feed_interval=_float(env, "NEWSDESK_FEED_INTERVAL", 900.0, minimum=1.0),
            folder_interval=_float(env, "NEWSDESK_FOLDER_INTERVAL", 5.0, minimum=0.1),
            poll_tick=_float(env, "NEWSDESK_POLL_TICK", 1.0, minimum=0.05),
            job_timeout=_int(env, "NEWSDESK_JOB_TIMEOUT", 180, minimum=1),
            maintenance_interval=_int(env, "NEWSDESK_MAINTENANCE_INTERVAL", 30, minimum=1),
            http_timeout=_float(env, "NEWSDESK_HTTP_TIMEOUT", 20.0, minimum=0.1),
            max_body_bytes=_int(env, "NEWSDESK_MAX_BODY_BYTES", 15 * 1024 * 1024, minimum=1024),
            max_file_bytes=_int(env, "NEWSDESK_MAX_FILE_BYTES", 2 * 1024 * 1024, minimum=1),
            extract_queue=env.get("NEWSDESK_EXTRACT_QUEUE", "").strip() or "newsdesk-extract",
            embedded_redis=embedded,
            fetch_allow=tuple(
                part.strip()
                for part in env.get("NEWSDESK_FETCH_ALLOW", "").split(",")
                if part.strip()
            ),
            feed_min_interval=_int(env, "NEWSDESK_FEED_MIN_INTERVAL", 300, minimum=1),
            feed_max_interval=_int(env, "NEWSDESK_FEED_MAX_INTERVAL", 86_400, minimum=1),
            cache_hint_cap=_int(env, "NEWSDESK_CACHE_HINT_CAP", 6 * 3600, minimum=0),
            retry_after_cap=_int(env, "NEWSDESK_RETRY_AFTER_CAP", 6 * 3600, minimum=1),
            disable_after=_int(env, "NEWSDESK_DISABLE_AFTER", 7 * 86_400, minimum=1),
            host_concurrency=_int(env, "NEWSDESK_HOST_CONCURRENCY", 2, minimum=1),
            host_spacing=_float(env, "NEWSDESK_HOST_SPACING", 1.0, minimum=0.0),
            fetch_concurrency=_int(env, "NEWSDESK_FETCH_CONCURRENCY", 50, minimum=1),
            queue_high_water=_int(env, "NEWSDESK_QUEUE_HIGH_WATER", 10_000, minimum=1),
            sweep_interval=_float(env, "NEWSDESK_SWEEP_INTERVAL", 600.0, minimum=1.0),
            worker_max_rss_mb=_int(env, "NEWSDESK_WORKER_MAX_RSS_MB", 1024, minimum=64),
            worker_batch=_int(env, "NEWSDESK_WORKER_BATCH", 32, minimum=1),
            webhook_queue=env.get("NEWSDESK_WEBHOOK_QUEUE", "").strip() or "newsdesk-webhooks",
            webhook_workers=_int(env, "NEWSDESK_WEBHOOK_WORKERS", 4, minimum=1),
            webhook_timeout=_float(env, "NEWSDESK_WEBHOOK_TIMEOUT", 15.0, minimum=0.1),
            webhook_schedule=_schedule(env, "NEWSDESK_WEBHOOK_SCHEDULE", DEFAULT_WEBHOOK_SCHEDULE),
            webhook_disable_after=_int(
                env, "NEWSDESK_WEBHOOK_DISABLE_AFTER", 5 * 86_400, minimum=1
            ),
            webhook_concurrency=_int(env, "NEWSDESK_WEBHOOK_CONCURRENCY", 2, minimum=1),
            webhook_batch=_int(env, "NEWSDESK_WEBHOOK_BATCH", 50, minimum=1),
            webhook_tick=_float(env, "NEWSDESK_WEBHOOK_TICK", 0.2, minimum=0.01),
            webhook_lease=_float(env, "NEWSDESK_WEBHOOK_LEASE", 120.0, minimum=0.1),
            webhook_rotation_grace=_int(env, "NEWSDESK_WEBHOOK_ROTATION_GRACE", 86_400, minimum=0),
            public_url=env.get("NEWSDESK_PUBLIC_URL", "").strip().rstrip("/"),
            auth=_bool(env, "NEWSDESK_AUTH", True),
            public_reads=_bool(env, "NEWSDESK_PUBLIC_READS", False),
            auth_cache=_float(env, "NEWSDESK_AUTH_CACHE", 5.0, minimum=0.0),
            rate_limit=_int(env, "NEWSDESK_RATE_LIMIT", 600, minimum=0),
            rate_window=_float(env, "NEWSDESK_RATE_WINDOW", 60.0, minimum=0.1),
            api_cache_mb=_int(env, "NEWSDESK_API_CACHE_MB", 32, minimum=0),
            api_cache_seconds=_float(env, "NEWSDESK_API_CACHE_SECONDS", 5.0, minimum=0.1),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests, `newsdesk up`)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def child_environment(self) -> dict[str, str]:
        """Environment that makes a child process resolve the same settings."""
        env = {
            "DATABASE_URL": self.database_url,
            "NEWSDESK_DATA_DIR": str(self.data_dir),
            "NEWSDESK_SEEDS_DIR": str(self.seeds_dir) if self.seeds_dir else "",
            "NEWSDESK_API_HOST": self.api_host,
            "NEWSDESK_API_PORT": str(self.api_port),
            "NEWSDESK_API_PROCESSES": str(self.api_processes),
            "NEWSDESK_WORKERS": str(self.workers),
            "NEWSDESK_LOG_LEVEL": self.log_level,
            "NEWSDESK_LOG_FORMAT": self.log_format,
            "NEWSDESK_FEED_INTERVAL": str(self.feed_interval),
            "NEWSDESK_FOLDER_INTERVAL": str(self.folder_interval),
            "NEWSDESK_POLL_TICK": str(self.poll_tick),
            "NEWSDESK_JOB_TIMEOUT": str(self.job_timeout),
            "NEWSDESK_MAINTENANCE_INTERVAL": str(self.maintenance_interval),
            "NEWSDESK_HTTP_TIMEOUT": str(self.http_timeout),
            "NEWSDESK_MAX_BODY_BYTES": str(self.max_body_bytes),
            "NEWSDESK_MAX_FILE_BYTES": str(self.max_file_bytes),
            "NEWSDESK_EXTRACT_QUEUE": self.extract_queue,
            "NEWSDESK_FETCH_ALLOW": ",".join(self.fetch_allow),
            "NEWSDESK_FEED_MIN_INTERVAL": str(self.feed_min_interval),
            "NEWSDESK_FEED_MAX_INTERVAL": str(self.feed_max_interval),
            "NEWSDESK_CACHE_HINT_CAP": str(self.cache_hint_cap),
            "NEWSDESK_RETRY_AFTER_CAP": str(self.retry_after_cap),
            "NEWSDESK_DISABLE_AFTER": str(self.disable_after),
            "NEWSDESK_HOST_CONCURRENCY": str(self.host_concurrency),
            "NEWSDESK_HOST_SPACING": str(self.host_spacing),
            "NEWSDESK_FETCH_CONCURRENCY": str(self.fetch_concurrency),
            "NEWSDESK_QUEUE_HIGH_WATER": str(self.queue_high_water),
            "NEWSDESK_SWEEP_INTERVAL": str(self.sweep_interval),
            "NEWSDESK_WORKER_MAX_RSS_MB": str(self.worker_max_rss_mb),
            "NEWSDESK_WORKER_BATCH": str(self.worker_batch),
            "NEWSDESK_WEBHOOK_QUEUE": self.webhook_queue,
            "NEWSDESK_WEBHOOK_WORKERS": str(self.webhook_workers),
            "NEWSDESK_WEBHOOK_TIMEOUT": str(self.webhook_timeout),
            "NEWSDESK_WEBHOOK_SCHEDULE": ",".join(f"{s:g}" for s in self.webhook_schedule),
            "NEWSDESK_WEBHOOK_DISABLE_AFTER": str(self.webhook_disable_after),
            "NEWSDESK_WEBHOOK_CONCURRENCY": str(self.webhook_concurrency),
            "NEWSDESK_WEBHOOK_BATCH": str(self.webhook_batch),
            "NEWSDESK_WEBHOOK_TICK": str(self.webhook_tick),
            "NEWSDESK_WEBHOOK_LEASE": str(self.webhook_lease),
            "NEWSDESK_WEBHOOK_ROTATION_GRACE": str(self.webhook_rotation_grace),
            "NEWSDESK_PUBLIC_URL": self.public_url,
            "NEWSDESK_AUTH": "on" if self.auth else "off",
            "NEWSDESK_PUBLIC_READS": "true" if self.public_reads else "false",
            "NEWSDESK_AUTH_CACHE": str(self.auth_cache),
            "NEWSDESK_RATE_LIMIT": str(self.rate_limit),
            "NEWSDESK_RATE_WINDOW": str(self.rate_window),
            "NEWSDESK_API_CACHE_MB": str(self.api_cache_mb),
            "NEWSDESK_API_CACHE_SECONDS": str(self.api_cache_seconds),
        }
        if not self.embedded_redis:
            env["REDIS_URL"] = self.redis_url
        return env
