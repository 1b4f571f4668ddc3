"""The folder source while the poller runs: new and modified files are picked up, deleted
files keep their articles, and what is not a regular file inside the root is refused."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.db import feeds
from services.db.models import Article, Event
from services.fetch import Fetcher
from services.poller.service import Poller
from services.queue import extract_queue


async def _until(check: Callable[[], bool], burst: Callable[[], int], timeout: float = 10) -> None:
    """Let the running poller work, draining the queue with the in-process worker."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.3)
        burst()
        if check():
            return
    raise AssertionError("condition not reached while the poller ran")


def _titles(db: sessionmaker[Session]) -> set[str]:
    with db() as s:
        return set(s.scalars(select(Article.title)))


async def test_running_poller_follows_the_folder(
    settings: Settings, db: sessionmaker[Session], redis_conn: Any, burst: Callable[[], int],
    tmp_path: Path,
) -> None:  # fmt: skip
    root = settings.seeds_dir
    assert root is not None
    (root / "a.txt").write_text("Storm hits Lisbon\n\nA storm reached Lisbon on Monday.\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("Secret headline\n\nNot for the folder source.\n")
    (root / "escape.txt").symlink_to(outside)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "sock.txt"))
    conf = settings.with_overrides(folder_interval=0.2, poll_tick=0.1)
    stop = asyncio.Event()
    async with Fetcher(conf) as fetcher:
        poller = Poller(conf, sessions=db, queue=extract_queue(conf, redis_conn), fetcher=fetcher)
        folder = await poller.ensure_folder_feed(datetime.now(UTC))
        assert folder is not None
        task = asyncio.create_task(poller.run(stop))
        try:
            await _until(lambda: _titles(db) == {"Storm hits Lisbon"}, burst)
            (root / "b.txt").write_text("Tram line opens in Porto\n\nThe new line runs today.\n")
            await _until(lambda: "Tram line opens in Porto" in _titles(db), burst)
            (root / "a.txt").write_text(
                "Storm hits Lisbon and Porto\n\nA storm reached Lisbon and Porto on Monday.\n"
            )
            await _until(lambda: "Storm hits Lisbon and Porto" in _titles(db), burst)
            os.unlink(root / "b.txt")
            await asyncio.sleep(1)  # several scans after the deletion
            burst()
        finally:
            stop.set()
            await task
            listener.close()
    assert _titles(db) == {"Storm hits Lisbon and Porto", "Tram line opens in Porto"}
    with db() as s:
        types = [e for e in s.scalars(select(Event.type).order_by(Event.id))]
        errors = {e.item_key: e.code for e in feeds.item_errors(s, feed_id=folder.id)}
    assert types == ["article.created", "article.created", "article.updated"]
    assert errors == {"escape.txt": "outside_root", "sock.txt": "not_regular"}
