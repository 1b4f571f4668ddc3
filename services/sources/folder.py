"""Folder source: the ``*.txt`` files below a root as items, confined to that root."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from services.core.errors import FetchError

SUFFIX = ".txt"
BOM = b"\xef\xbb\xbf"
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
)


@dataclass(frozen=True)
class FolderEntry:
    """One file: its text, or the reason it cannot become an article.

    ``content_hash`` is the sha256 of the file's bytes when they were read; for a file that is
    refused unread (too large, not regular, outside the root) it is the sha256 of the refusal
    and the file's identity, so the same refusal is recorded once, not on every scan.
    """

    item_key: str
    content_hash: str
    text: str | None = None
    error_code: str | None = None
    error_detail: str | None = None


def scan_folder(root: Path, *, max_bytes: int) -> list[FolderEntry]:
    """Every ``*.txt`` file below ``root`` (recursive, sorted by relative path).

    Hidden files and directories (name starting with ".") are skipped, as are directory
    symlinks (no loops, no escapes). A file symlink is followed only when its target resolves
    inside ``root``. FIFOs, devices and sockets are never opened.

    Raises:
        FetchError: code ``folder_missing`` when ``root`` is not a readable directory.
    """
    try:
        real_root = root.resolve(strict=True)
    except OSError as exc:
        raise FetchError(f"folder {root} is not readable: {exc}", code="folder_missing") from None
    if not real_root.is_dir():
        raise FetchError(f"{root} is not a directory", code="folder_missing")
    entries = [_entry(real_root, rel, max_bytes) for rel in _walk(real_root)]
    return [e for e in entries if e is not None]


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.endswith(SUFFIX) and not name.startswith("."):
                found.append((base / name).as_posix())
    return sorted(found)


def _entry(root: Path, rel: str, max_bytes: int) -> FolderEntry | None:
    path = root / rel
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        # A name that is not UTF-8 cannot be stored as a key; report it under a readable one.
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return _refused(shown, "bad_filename", "the file name is not valid UTF-8")
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            target = path.resolve(strict=True)
            if not target.is_relative_to(root):
                return _refused(
                    rel, "outside_root", f"symlink resolves outside the folder to {target}"
                )
            path, info = target, target.lstat()
        if not stat.S_ISREG(info.st_mode):
            return _refused(rel, "not_regular", f"not a regular file (mode {info.st_mode:o})", info)
        if info.st_size > max_bytes:
            return _refused(rel, "too_large", f"{info.st_size} bytes, cap {max_bytes}", info)
        data = _read(path, info, max_bytes)
    except FileNotFoundError:
        return None  # deleted (or a dangling link) since the listing: nothing to report
    except _Refused as refusal:
        return _refused(rel, refusal.code, str(refusal), refusal.info)
    except OSError as exc:
        return _refused(rel, "unreadable", f"{type(exc).__name__}: {exc}")
    return _decoded(rel, data)


class _Refused(Exception):
    def __init__(self, code: str, detail: str, info: os.stat_result) -> None:
        super().__init__(detail)
        self.code = code
        self.info = info


def _read(path: Path, expected: os.stat_result, max_bytes: int) -> bytes:
    # O_NOFOLLOW + O_NONBLOCK: a file swapped for a symlink or a FIFO after the lstat() is not
    # followed and cannot block the poller; fstat() then checks it is still the file we vetted.
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            expected.st_dev,
            expected.st_ino,
        ):
            raise _Refused("not_regular", "file changed type while being opened", info)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _Refused("too_large", f"grew past the cap of {max_bytes} bytes", info)
    return data


def _decoded(rel: str, data: bytes) -> FolderEntry:
    digest = hashlib.sha256(data).hexdigest()
    body = data.removeprefix(BOM)
    if not body.strip():
        return FolderEntry(rel, digest, error_code="empty_file", error_detail="the file is empty")
    if b"\x00" in body:
        return FolderEntry(rel, digest, error_code="binary_file", error_detail="NUL bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"not valid UTF-8 at byte {exc.start}"
        return FolderEntry(rel, digest, error_code="binary_file", error_detail=detail)
    return FolderEntry(rel, digest, text=text)


def _refused(rel: str, code: str, detail: str, info: os.stat_result | None = None) -> FolderEntry:
    identity = f"{code}\x1f{detail}"
    if info is not None:
        identity += f"\x1f{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()
    return FolderEntry(rel, digest, error_code=code, error_detail=detail)
