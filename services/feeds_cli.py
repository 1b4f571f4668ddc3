"""``newsdesk feeds ...``: manage sources straight in the database, through the repository."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from services.admin_cli import EXIT_OK, AdminContext, run_action
from services.config import Settings
from services.core.errors import Conflict, InvalidInput
from services.core.feedurl import normalise_feed_url
from services.core.opml import MAX_TITLE_CHARS, OpmlFeed, OpmlWriter, parse_opml, screen
from services.core.records import FULLTEXT_MODES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.core.records import FeedRecord

T = TypeVar("T")

PROG = "newsdesk feeds"
IMPORT_BATCH = 250  # one transaction each; divides PROGRESS_EVERY, so lines land on it
PROGRESS_EVERY = 500
PAGE = 500


def _feed_id(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"feed id must be a positive whole number, got {raw!r}")
    return int(raw)


def add_subparser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``feeds`` and its actions on the ``newsdesk`` parser."""
    feeds = sub.add_parser(
        "feeds",
        help="list, add, change, delete, poll, import and export feeds",
        description="Manage feeds directly in the database (the API need not run).",
    )
    actions = feeds.add_subparsers(dest="feeds_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every feed with its state")
    listing.add_argument("--json", action="store_true", help="JSON, as the API shows feeds")
    add = actions.add_parser("add", help="register an HTTP feed, due at once")
    add.add_argument("url")
    add.add_argument("--title")
    show = actions.add_parser("show", help="a feed's health, schedule and recent item errors")
    show.add_argument("id", type=_feed_id, metavar="ID")
    show.add_argument("--json", action="store_true")
    update = actions.add_parser("update", help="change title, interval, state or full-text mode")
    update.add_argument("id", type=_feed_id, metavar="ID")
    update.add_argument("--title", help="new title ('' clears it)")
    interval = update.add_mutually_exclusive_group()
    interval.add_argument("--interval", type=int, metavar="SECONDS", help="fixed interval")
    interval.add_argument("--adaptive", action="store_true", help="follow the feed's rate")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="enable (clears the error state)")
    state.add_argument("--disable", action="store_true")
    update.add_argument(
        "--fulltext",
        choices=FULLTEXT_MODES,
        metavar="MODE",
        help="fetch article pages: auto (items without full text), always or never",
    )
    for name, text in (("delete", "forget a feed and its items"), ("poll", "poll a feed now")):
        actions.add_parser(name, help=text).add_argument("id", type=_feed_id, metavar="ID")
    imp = actions.add_parser("import", help="add every feed of an OPML file; known ones skipped")
    imp.add_argument("file", type=Path, metavar="FILE.opml")
    export = actions.add_parser("export", help="every HTTP feed as OPML")
    export.add_argument("file", type=Path, nargs="?", metavar="FILE", help="default: stdout")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``feeds`` action. 0: done; 1: not found or conflict; 2: usage or config error."""
    return run_action(PROG, settings, _ACTIONS[args.feeds_command], args)


def _all_feeds(ctx: AdminContext) -> Iterator[FeedRecord]:
    from services.db import feeds

    after = 0
    while True:
        page = ctx.read(partial(feeds.list_feeds, after_id=after, limit=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].id


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def _list(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.api import schemas

    records = list(_all_feeds(ctx))
    if args.json:
        print(json.dumps([schemas.feed(r) for r in records], indent=2), file=ctx.out)
        return EXIT_OK
    rows = [("ID", "STATE", "ERRORS", "LAST SUCCESS", "NEXT POLL", "URL")]
    rows += [
        (str(r.id), r.state, str(r.error_count), _when(r.last_success_at),
         _when(r.next_poll_at), r.url)
        for r in records
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [row[0].rjust(widths[0])] + [row[i].ljust(widths[i]) for i in range(1, 5)]
        print("  ".join([*cells, row[5]]), file=ctx.out)
    return EXIT_OK


def _title(raw: str | None) -> str | None:
    title = (raw or "").strip()
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(f"title is longer than {MAX_TITLE_CHARS} characters", param="title")
    return title or None


def _add(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    url, title = normalise_feed_url(args.url), _title(args.title)
    interval, now = max(1, round(ctx.settings.feed_interval)), datetime.now(UTC)
    record = ctx.write(
        lambda s: feeds.add_feed(
            s, url=url, kind="http", interval_seconds=interval, now=now, title=title
        ),
    )
    print(f"added feed {record.id}: {record.url}", file=ctx.out)
    return EXIT_OK


def _show(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    def work(s: Session) -> tuple[FeedRecord, list[Any]]:
        return feeds.get_feed(s, args.id), feeds.item_errors(s, feed_id=args.id, limit=20)

    record, errors = ctx.read(work)
    _print_feed(ctx, record, errors, as_json=args.json)
    return EXIT_OK


def _print_feed(ctx: AdminContext, record: FeedRecord, errors: list[Any], *, as_json: bool) -> None:
    from services.api import schemas

    detail = schemas.feed_detail(record, errors)
    if as_json:
        print(json.dumps(detail, indent=2), file=ctx.out)
        return
    item_errors = detail.pop("item_errors")
    for key, value in detail.items():
        print(f"{key:<18} {'-' if value is None else value}", file=ctx.out)
    print(f"{'item_errors':<18} {len(item_errors)}", file=ctx.out)
    for e in item_errors:
        print(f"  {e['seen_at']}  [{e['code']}] {e['item_key']}: {e['detail']}", file=ctx.out)


def _update(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    changes: dict[str, Any] = {}
    if args.title is not None:
        changes["title"] = _title(args.title)
    if args.adaptive:
        changes["interval_override"] = None
    elif args.interval is not None:
        low, high = ctx.settings.feed_min_interval, ctx.settings.feed_max_interval
        if not low <= args.interval <= high:
            raise InvalidInput(f"--interval must be from {low} to {high} seconds")
        changes["interval_override"] = args.interval
    if args.enable or args.disable:
        changes["enabled"] = bool(args.enable)
    if args.fulltext is not None:
        changes["fulltext"] = args.fulltext
    if not changes:
        raise InvalidInput("nothing to change: give --title, --interval, --adaptive, "
                           "--enable, --disable or --fulltext")  # fmt: skip
    now = datetime.now(UTC)
    record = ctx.write(lambda s: feeds.update_feed(s, args.id, now=now, **changes))
    _print_feed(ctx, record, [], as_json=False)
    return EXIT_OK


def _delete(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    def work(s: Session) -> FeedRecord:
        record = feeds.get_feed(s, args.id)
        if record.kind == "folder":
            raise Conflict(
                f"feed {args.id} is the folder source (NEWSDESK_SEEDS_DIR); the poller would "
                "register it again. Disable it (`update --disable`) or empty NEWSDESK_SEEDS_DIR.",
                code="folder_source",
            )
        feeds.delete_feed(s, args.id)
        return record

    record = ctx.write(work)
    print(f"deleted feed {record.id}: {record.url}", file=ctx.out)
    return EXIT_OK


def _poll(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    now = datetime.now(UTC)
    record = ctx.write(lambda s: feeds.poll_now(s, args.id, now=now))
    print(f"feed {record.id} is due now; a running poller takes it on its next tick", file=ctx.out)
    return EXIT_OK


class _Progress:
    """One redrawn line on a terminal; a line every PROGRESS_EVERY entries in a log."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.tty = stream, total, stream.isatty()
        self.drawn = False
        self.reported = 0

    def note(self, message: str) -> None:
        prefix = "\r\x1b[K" if self.drawn else ""
        self.stream.write(f"{prefix}{PROG}: {message}\n")
        self.drawn = False

    def update(self, done: int, created: int, existing: int, invalid: int) -> None:
        line = (
            f"imported {done}/{self.total} "
            f"(created {created}, existing {existing}, invalid {invalid})"
        )
        if self.tty:
            self.stream.write(f"\r{line}")
            self.drawn = True
        elif done // PROGRESS_EVERY > self.reported // PROGRESS_EVERY or done == self.total:
            self.stream.write(line + "\n")
        self.reported = done
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


def _import(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db import feeds

    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}", code="io_error") from None
    entries = parse_opml(data)
    interval, now = max(1, round(ctx.settings.feed_interval)), datetime.now(UTC)
    progress = _Progress(ctx.err, len(entries))
    seen: set[str] = set()
    created = existing = invalid = 0
    for start in range(0, len(entries), IMPORT_BATCH):
        chunk = entries[start : start + IMPORT_BATCH]
        batch = screen(chunk, seen)
        for url, detail in batch.invalid:
            progress.note(f"skipped invalid URL {url!r}: {detail}")
        added = ctx.write(
            partial(
                feeds.add_feeds,
                entries=[(e.url, e.title) for e in batch.new],
                interval_seconds=interval,
                now=now,
            ),
        )
        created += added
        existing += batch.repeated + len(batch.new) - added
        invalid += len(batch.invalid)
        progress.update(start + len(chunk), created, existing, invalid)
    progress.finish()
    print(
        f"imported {len(entries)} entries from {path}: "
        f"created {created}, existing {existing}, invalid {invalid}",
        file=ctx.out,
    )
    return EXIT_OK


def _export(ctx: AdminContext, args: argparse.Namespace) -> int:
    writer, count = OpmlWriter(), 0

    def chunks() -> Iterator[str]:
        nonlocal count
        yield writer.head(title="newsdesk feeds", now=datetime.now(UTC))
        for record in _all_feeds(ctx):
            if record.kind == "http":
                count += 1
                yield writer.feeds([OpmlFeed(record.url, record.title, record.site_url)])
        yield writer.tail()

    if args.file is None:
        ctx.out.writelines(chunks())
        return EXIT_OK
    path: Path = args.file
    aside = path.with_name(f".{path.name}.partial")
    try:
        # Written aside and renamed, so an interrupted export never leaves half a file.
        with aside.open("w", encoding="utf-8") as f:
            f.writelines(chunks())
        os.replace(aside, path)
    except OSError as exc:
        aside.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}", code="io_error") from None
    print(f"exported {count} feeds to {path}", file=ctx.out)
    return EXIT_OK


_ACTIONS: dict[str, Callable[[AdminContext, argparse.Namespace], int]] = {
    "list": _list,
    "add": _add,
    "show": _show,
    "update": _update,
    "delete": _delete,
    "poll": _poll,
    "import": _import,
    "export": _export,
}
