"""``newsdesk keys ...``: create, list and revoke API keys straight in the database."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from services.admin_cli import EXIT_OK, AdminContext, run_action
from services.config import Settings

if TYPE_CHECKING:
    from services.db.apikeys import ApiKeyRecord, NewKey

T = TypeVar("T")

PROG = "newsdesk keys"


def _key_id(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"key id must be a positive whole number, got {raw!r}")
    return int(raw)


def add_subparser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``keys`` and its actions on the ``newsdesk`` parser."""
    keys = sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage the API's bearer keys directly in the database. A key's token is "
        "shown once, at creation; only its hash is stored.",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new key; prints its token (only now) on stdout")
    create.add_argument("--name", required=True, help="what or who the key is for")
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        metavar="{read,write}",
        help="read (GET routes) and/or write (every other method); repeat for both; default: read",
    )
    listing = actions.add_parser("list", help="every key: id, name, prefix, scopes, use")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key (the API refuses it within seconds)")
    revoke.add_argument("id", type=_key_id, metavar="ID")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``keys`` action. 0: done; 1: no such key; 2: usage or storage error."""
    return run_action(PROG, settings, _ACTIONS[args.keys_command], args)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _create(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db.apikeys import create_key

    scopes = args.scopes or ["read"]
    now = datetime.now(UTC)
    new: NewKey = ctx.write(lambda s: create_key(s, name=args.name, scopes=scopes, now=now))
    record = new.record
    # The token alone on stdout (`TOKEN=$(newsdesk keys create ...)`), the words on stderr.
    print(new.token, file=ctx.out)
    print(
        f"created key {record.id} {record.name!r} ({', '.join(sorted(record.scopes))}), "
        f"prefix {record.prefix}. The token above is shown only now; newsdesk keeps its hash.",
        file=ctx.err,
    )
    return EXIT_OK


def as_json(record: ApiKeyRecord) -> dict[str, object]:
    """A key as ``keys list --json`` shows it (never the token or its hash)."""
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": sorted(record.scopes),
        "created_at": _when(record.created_at),
        "last_used_at": None if record.last_used_at is None else _when(record.last_used_at),
        "revoked_at": None if record.revoked_at is None else _when(record.revoked_at),
    }


def _list(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db.apikeys import list_keys

    with ctx.sessions() as session:
        found = list_keys(session)
    if args.json:
        print(json.dumps([as_json(r) for r in found], indent=2), file=ctx.out)
        return EXIT_OK
    # The name goes last: it may hold spaces, and every other column is one word.
    rows = [("ID", "PREFIX", "SCOPES", "CREATED", "LAST-USED", "REVOKED", "NAME")]
    rows += [
        (
            str(r.id),
            r.prefix,
            ",".join(sorted(r.scopes)),
            _when(r.created_at),
            _when(r.last_used_at),
            _when(r.revoked_at),
            r.name,
        )
        for r in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=ctx.out)
    return EXIT_OK


def _revoke(ctx: AdminContext, args: argparse.Namespace) -> int:
    from services.db.apikeys import revoke_key

    now = datetime.now(UTC)
    record, changed = ctx.write(lambda s: revoke_key(s, args.id, now=now))
    if changed:
        print(f"revoked key {record.id} ({record.prefix}, {record.name!r})", file=ctx.out)
    else:
        print(
            f"key {record.id} ({record.prefix}) was already revoked at {_when(record.revoked_at)}",
            file=ctx.out,
        )
    return EXIT_OK


_ACTIONS: dict[str, Callable[[AdminContext, argparse.Namespace], int]] = {
    "create": _create,
    "list": _list,
    "revoke": _revoke,
}
