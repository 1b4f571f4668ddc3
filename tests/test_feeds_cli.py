"""`newsdesk feeds ...` run in-process against the test database: actions, errors, OPML."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.core.opml import OpmlFeed, parse_opml, render_opml
from services.db.models import Feed

Run = Callable[..., tuple[int, str, str]]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cli(newsdesk_cli: Run) -> Run:
    """``newsdesk feeds ARGS`` -> (exit code, stdout, stderr), on the test database."""
    return partial(newsdesk_cli, "feeds")


def test_add_list_show_update_poll_delete(cli: Run) -> None:
    code, out, err = cli("add", " HTTPS://A.Test/rss ", "--title", "  Alpha ")
    assert (code, err) == (0, "") and out == "added feed 1: https://a.test/rss\n"
    assert cli("add", "https://b.test/atom")[0] == 0

    code, out, _ = cli("list")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATE", "ERRORS", "LAST", "SUCCESS", "NEXT", "POLL", "URL"]
    assert [r.split()[0] for r in rows] == ["1", "2"]
    assert rows[0].split()[1:4] == ["active", "0", "-"] and rows[0].endswith("https://a.test/rss")

    code, out, _ = cli("list", "--json")
    listed = json.loads(out)
    assert [f["title"] for f in listed] == ["Alpha", None] and listed[0]["state"] == "active"

    code, out, _ = cli("show", "1")
    assert code == 0 and re.search(r"^title\s+Alpha$", out, re.M)
    assert re.search(r"^interval_override\s+-$", out, re.M) and "item_errors" in out
    assert json.loads(cli("show", "1", "--json")[1])["url"] == "https://a.test/rss"

    code, out, _ = cli("update", "1", "--title", "", "--interval", "600", "--disable")
    assert code == 0 and re.search(r"^title\s+-$", out, re.M)
    shown = json.loads(cli("show", "1", "--json")[1])
    assert shown["state"] == "disabled" and shown["interval_override"] == 600
    assert shown["disabled_reason"] == "operator"

    code, _, err = cli("poll", "1")
    assert code == 1 and err.startswith("newsdesk feeds: error [conflict]: feed 1 is disabled")
    assert cli("update", "1", "--enable", "--adaptive")[0] == 0
    shown = json.loads(cli("show", "1", "--json")[1])
    assert shown["state"] == "active" and shown["interval_override"] is None
    code, out, _ = cli("poll", "1")
    assert code == 0 and "due now" in out

    assert cli("delete", "2") == (0, "deleted feed 2: https://b.test/atom\n", "")
    assert cli("show", "2")[:3:2] == (1, "newsdesk feeds: error [not_found]: no feed with id 2\n")


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [(["add", "ftp://x.test/"], 2, "[invalid_url]: url must be an http:// or https:// URL"),
     (["add", "https://user:pw@x.test/"], 2, "[invalid_url]: url must not contain credentials"),
     (["show", "99"], 1, "[not_found]: no feed with id 99"),
     (["delete", "99"], 1, "[not_found]"), (["poll", "99"], 1, "[not_found]"),
     (["update", "99", "--title", "x"], 1, "[not_found]"),
     (["update", "1"], 2, "[invalid]: nothing to change"),
     (["update", "1", "--interval", "5"], 2, "[invalid]: --interval must be from 300 to 86400"),
     (["update", "1", "--title", "x" * 1001], 2, "[invalid]: title is longer"),
     (["import", "/nonexistent/feeds.opml"], 2, "[io_error]: cannot read /nonexistent")],
)  # fmt: skip
def test_errors_and_exit_codes(cli: Run, args: list[str], code: int, error: str) -> None:
    assert cli("add", "https://one.test/rss")[0] == 0
    got, out, err = cli(*args)
    assert (got, out) == (code, "")
    assert err.startswith("newsdesk feeds: error ") and error in err, err


def test_conflicts(cli: Run, db: sessionmaker[Session]) -> None:
    assert cli("add", "https://one.test/rss")[0] == 0
    code, _, err = cli("add", "HTTPS://ONE.test/rss")
    assert code == 1 and "[conflict]: a feed with URL 'https://one.test/rss' already exists" in err
    with db.begin() as s:
        folder = Feed(url="folder:/srv/seeds", kind="folder", interval_seconds=5, next_poll_at=T0)
        s.add(folder)
        s.flush()
        folder_id = folder.id
    code, _, err = cli("delete", str(folder_id))
    assert code == 1 and f"[folder_source]: feed {folder_id} is the folder source" in err


@pytest.mark.parametrize(
    "args",
    [["show", "abc"], ["show", "0"], ["update", "1", "--interval", "60", "--adaptive"],
     ["update", "1", "--enable", "--disable"], ["frobnicate"], []],
)  # fmt: skip
def test_usage_errors_exit_2(cli: Run, args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(*args)
    assert info.value.code == 2


def test_unmigrated_database_is_a_clear_error(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    code, _, err = cli("list")
    assert code == 2 and err.startswith("newsdesk feeds: error [storage_unavailable]: ")
    assert "migrated" in err


# --- OPML import and export ----------------------------------------------------------------------

N = 1200


def generated() -> list[OpmlFeed]:
    """1,200 entries in nested folders: every 100th URL invalid, every 200th a repeat."""
    feeds = []
    for i in range(N):
        url = f"https://site{i}.test/feed.xml?n={i}&fmt=rss"
        if i % 100 == 99:
            url = f"ftp://bad{i}.test/feed"
        elif i % 200 == 50:
            url = f"https://site{i - 50}.test/feed.xml?n={i - 50}&fmt=rss"
        category = (f"Group {i // 300}", f"Sub {i // 100}") if i % 3 else (f"Group {i // 300}",)
        feeds.append(OpmlFeed(url, f"Site <{i}> & more", f"https://site{i}.test/", category))
    return feeds


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("imported ")]


def test_import_a_large_opml_in_batches_with_progress(cli: Run, tmp_path: Path) -> None:
    for i in range(10):  # already registered: counted as existing, left as they are
        assert cli("add", f"https://site{i}.test/feed.xml?n={i}&fmt=rss")[0] == 0
    path = tmp_path / "big.opml"
    path.write_text(render_opml(generated(), title="big", now=T0), encoding="utf-8")

    code, out, err = cli("import", str(path))

    assert code == 0, err
    invalid, repeated = N // 100, N // 200
    created = N - invalid - repeated - 10
    assert out == (
        f"imported {N} entries from {path}: "
        f"created {created}, existing {repeated + 10}, invalid {invalid}\n"
    )
    lines = progress_lines(err)
    assert [line.split()[1] for line in lines] == ["500/1200", "1000/1200", "1200/1200"]
    assert lines[-1] == (
        f"imported {N}/{N} (created {created}, existing {repeated + 10}, invalid {invalid})"
    )
    skipped = [line for line in err.splitlines() if "skipped invalid URL" in line]
    assert len(skipped) == invalid
    assert skipped[0] == (
        "newsdesk feeds: skipped invalid URL 'ftp://bad99.test/feed': "
        "url must be an http:// or https:// URL"
    )
    listed = json.loads(cli("list", "--json")[1])
    assert len(listed) == created + 10
    assert listed[10]["title"] == "Site <10> & more" and listed[0]["title"] is None

    code, out, _ = cli("import", str(path))  # a second run adds nothing
    assert code == 0 and f"created 0, existing {N - invalid}, invalid {invalid}" in out


def test_import_progress_redraws_one_line_on_a_terminal(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    feeds = [OpmlFeed(f"https://t{i}.test/") for i in range(600)] + [OpmlFeed("nope")]
    path = tmp_path / "t.opml"
    path.write_text(render_opml(feeds, title="t", now=T0), encoding="utf-8")

    code, out, _ = cli("import", str(path))

    assert code == 0 and "created 600, existing 0, invalid 1" in out
    text = terminal.getvalue()
    assert text.startswith("\rimported 250/601 (created 250, existing 0, invalid 0)")
    assert "\rimported 500/601 " in text
    # The invalid entry's report clears the drawn line; the last redraw ends the line.
    assert "\r\x1b[Knewsdesk feeds: skipped invalid URL 'nope': " in text
    assert text.endswith("\rimported 601/601 (created 600, existing 0, invalid 1)\n")
    assert text.count("\n") == 2


def test_import_refuses_a_bomb_and_non_opml(cli: Run, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.opml"
    bomb.write_bytes(b'<!DOCTYPE x [<!ENTITY a "b">]><opml><body/></opml>')
    code, _, err = cli("import", str(bomb))
    assert code == 2 and "[bad_opml]: OPML must not contain DOCTYPE" in err
    rss = tmp_path / "feed.rss"
    rss.write_bytes(b"<rss><channel/></rss>")
    assert "root element is <rss>" in cli("import", str(rss))[2]


def test_export_round_trips(cli: Run, tmp_path: Path, db: sessionmaker[Session]) -> None:
    source = [
        OpmlFeed(f"https://e{i}.test/rss?x={i}&y=<>", None if i % 5 == 0 else f'E "{i}"')
        for i in range(700)
    ]
    src = tmp_path / "in.opml"
    src.write_text(render_opml(source, title="in", now=T0), encoding="utf-8")
    assert cli("import", str(src))[0] == 0
    with db.begin() as s:  # the folder source is not a subscription and is not exported
        s.add(Feed(url="folder:/srv/seeds", kind="folder", interval_seconds=5, next_poll_at=T0))

    code, out, err = cli("export")
    assert (code, err) == (0, "")
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert parse_opml(out.encode()) == source

    target = tmp_path / "out" / "feeds.opml"
    target.parent.mkdir()
    code, out, _ = cli("export", str(target))
    assert (code, out) == (0, f"exported 700 feeds to {target}\n")
    assert parse_opml(target.read_bytes()) == source
    assert sorted(p.name for p in target.parent.iterdir()) == ["feeds.opml"]

    code, out, _ = cli("import", str(target))
    assert code == 0 and "created 0, existing 700, invalid 0" in out

    code, _, err = cli("export", str(tmp_path / "missing-dir" / "x.opml"))
    assert code == 2 and "[io_error]: cannot write" in err
