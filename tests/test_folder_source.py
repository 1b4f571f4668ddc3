"""scan_folder: every *.txt below the root becomes text or a stated error; nothing escapes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.core.errors import FetchError
from services.sources.folder import FolderEntry, scan_folder

MAX = 1024


def by_key(entries: list[FolderEntry]) -> dict[str, FolderEntry]:
    return {e.item_key: e for e in entries}


def test_nested_files_sorted_with_relative_posix_keys(tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("Headline A\n\nBody A.\n")
    (tmp_path / "b" / "deeper" / "c.txt").write_text("Headline C\n")
    (tmp_path / "b" / "notes.md").write_text("not a .txt file")
    (tmp_path / ".hidden.txt").write_text("editor temp file")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("vcs internals")
    entries = scan_folder(tmp_path, max_bytes=MAX)
    assert [e.item_key for e in entries] == ["a.txt", "b/deeper/c.txt"]
    first = entries[0]
    assert first.text == "Headline A\n\nBody A.\n" and first.error_code is None
    assert first.content_hash == hashlib.sha256(b"Headline A\n\nBody A.\n").hexdigest()


def test_bom_is_stripped_but_hashed(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbfTitle\nBody\n"
    (tmp_path / "bom.txt").write_bytes(raw)
    (entry,) = scan_folder(tmp_path, max_bytes=MAX)
    assert entry.text == "Title\nBody\n"
    assert entry.content_hash == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b" \n\t\n", "empty_file"),
        (b"\xef\xbb\xbf", "empty_file"),
        (b"PK\x03\x04\x00\x00binary", "binary_file"),
        (b"caf\xe9 au lait", "binary_file"),
        (b"x" * (MAX + 1), "too_large"),
    ],
    ids=["empty", "whitespace", "bom_only", "nul_bytes", "invalid_utf8", "too_large"],
)
def test_bad_files_get_an_error_code_and_the_rest_still_scan(
    tmp_path: Path, data: bytes, code: str
) -> None:
    (tmp_path / "bad.txt").write_bytes(data)
    (tmp_path / "good.txt").write_text("Fine article\n")
    entries = by_key(scan_folder(tmp_path, max_bytes=MAX))
    assert entries["bad.txt"].error_code == code
    assert entries["bad.txt"].text is None and entries["bad.txt"].error_detail
    assert entries["good.txt"].text == "Fine article\n"


def test_symlink_out_of_root_is_refused_inside_is_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("SECRET CANARY")
    (root / "real.txt").write_text("Real article\n")
    (root / "escape.txt").symlink_to(secret)
    (root / "via_dots.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    (root / "alias.txt").symlink_to(root / "real.txt")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "dangling.txt").symlink_to(root / "gone.txt")
    entries = by_key(scan_folder(root, max_bytes=MAX))
    assert set(entries) == {"alias.txt", "escape.txt", "real.txt", "via_dots.txt"}
    for key in ("escape.txt", "via_dots.txt"):
        assert entries[key].error_code == "outside_root" and entries[key].text is None
    assert entries["alias.txt"].text == "Real article\n"
    assert all("SECRET CANARY" not in (e.text or "") for e in entries.values())


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "after.txt").write_text("Still scanned\n")
    # Opening a FIFO with no writer would block this test forever (per-test timeout).
    entries = by_key(scan_folder(tmp_path, max_bytes=MAX))
    assert entries["pipe.txt"].error_code == "not_regular"
    assert entries["after.txt"].text == "Still scanned\n"


def test_refusal_hash_is_stable_between_scans(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "big.txt").write_bytes(b"y" * (MAX * 4))
    first = scan_folder(tmp_path, max_bytes=MAX)
    assert first == scan_folder(tmp_path, max_bytes=MAX)


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    locked = tmp_path / "locked.txt"
    locked.write_text("no access")
    locked.chmod(0)
    (entry,) = scan_folder(tmp_path, max_bytes=MAX)
    assert entry.error_code == "unreadable"


def test_missing_root_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as info:
        scan_folder(tmp_path / "nope", max_bytes=MAX)
    assert info.value.code == "folder_missing"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FetchError):
        scan_folder(tmp_path / "file", max_bytes=MAX)


def test_non_utf8_file_name_is_reported_not_crashed(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")
    try:
        (tmp_path / name).write_text("body\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip("the file system refuses non-UTF-8 names")
    (entry,) = scan_folder(tmp_path, max_bytes=MAX)
    assert entry.error_code == "bad_filename"
    entry.item_key.encode("utf-8")
