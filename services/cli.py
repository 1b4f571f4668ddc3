"""The ``newsdesk`` command: one subcommand per role, plus ``up`` that runs them all."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services import feeds_cli, keys_cli, reprocess_cli
from services.config import Settings
from services.core.errors import NewsdeskError

# Roles that queue or run jobs in an external Redis (`up` checks its own once Redis is up).
REDIS_ROLES = frozenset({"api", "poller", "worker", "dispatcher", "deliver"})
# `feeds` actions that change what the API's cached reads show (feed ids, titles and URLs of
# articles' sources): the data version is bumped after them.
FEEDS_CHANGES = frozenset({"update", "delete"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newsdesk",
        description="Self-hosted news monitoring. Settings come from environment variables; "
        "see README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="run everything with embedded defaults (SQLite + Redis)")
    sub.add_parser("migrate", help="apply database migrations")
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument(
        "--processes", type=int, help="server processes (default: NEWSDESK_API_PROCESSES)"
    )
    sub.add_parser("poller", help="poll feeds and the seeds folder, queue extraction jobs")
    worker = sub.add_parser("worker", help="run extraction workers")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--workers", type=int, help="processes (default: NEWSDESK_WORKERS)")
    sub.add_parser("dispatcher", help="fan events out into webhook deliveries, queue due ones")
    deliver = sub.add_parser("deliver", help="run webhook delivery workers (no NER model)")
    deliver.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    deliver.add_argument(
        "--workers", type=int, help="processes (default: NEWSDESK_WEBHOOK_WORKERS)"
    )
    feeds_cli.add_subparser(sub)
    keys_cli.add_subparser(sub)
    reprocess_cli.add_subparser(sub)
    return parser


def migrate(settings: Settings) -> None:
    from services.db.engine import make_engine
    from services.db.migrate import upgrade

    engine = make_engine(settings.database_url, role="migrate")
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command in REDIS_ROLES:
            # Before any work: an evicting Redis could drop queued jobs without an error.
            from services.logs import setup_logging
            from services.redis_check import require_noeviction

            setup_logging(settings.log_level, args.command, settings.log_format)
            require_noeviction(settings)
        if args.command == "up":
            from services.supervisor import up

            return up(settings)
        if args.command == "migrate":
            migrate(settings)
            print("database is at the latest revision")
        elif args.command == "api":
            from services.api.server import run as run_api

            if args.processes:
                settings = settings.with_overrides(api_processes=max(1, args.processes))
            run_api(settings)
        elif args.command == "poller":
            from services.poller.role import run as run_poller

            run_poller(settings)
        elif args.command == "worker":
            from workers.runner import run as run_workers

            if args.workers:
                settings = settings.with_overrides(workers=max(1, args.workers))
            run_workers(settings, burst=args.burst)
        elif args.command == "dispatcher":
            from services.webhooks.dispatcher import run as run_dispatcher

            run_dispatcher(settings)
        elif args.command == "deliver":
            from workers.deliver import run as run_deliver

            if args.workers:
                settings = settings.with_overrides(webhook_workers=max(1, args.workers))
            run_deliver(settings, burst=args.burst)
        elif args.command == "feeds":
            code = feeds_cli.run(settings, args)
            if code == 0 and args.feeds_command in FEEDS_CHANGES:
                from services.dataversion import bump_now

                bump_now(settings.redis_url)
            return code
        elif args.command == "keys":
            return keys_cli.run(settings, args)
        elif args.command == "reprocess":
            return reprocess_cli.run(settings, args)
    except NewsdeskError as exc:
        print(f"newsdesk {args.command}: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
