"""Loopback feed server that plays real captures back, one capture per consumed poll.

Each feed has a list of captures (``tests/data/feeds``), each served with its own ETag. A
feed moves to its next capture only when a request carries the current capture's ETag in
``If-None-Match``: the poller stores a feed's validators only after it has queued the
feed's items, so that request proves the capture was consumed. A poller that died half-way
(or a reconciliation that cleared the validators) is served the same capture again.

The items each capture holds are read here with ``xml.etree``, independently of the
service's own parser, to give the invariants what was played back.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FEEDS = Path(__file__).parent.parent / "data" / "feeds"
CONTENT_NS = "{http://purl.org/rss/1.0/modules/content/}encoded"

# Three publishers, successive real captures of each (oldest first).
PLAYLISTS: dict[str, tuple[str, ...]] = {
    "bbc": ("bbc__20200517T221855Z.xml", "bbc__20200517T222028Z.xml"),
    "nytimes": ("nytimes__20200517T221855Z.xml", "nytimes__20200517T222831Z.xml"),
    "latimes": ("latimes__20200421T200942Z.xml",),
}


def capture_keys(body: bytes) -> list[str]:
    """The item keys of an RSS 2.0 capture: the GUID, else the link (whitespace stripped)."""
    keys = []
    for item in ET.fromstring(body).iter("item"):
        for tag in ("guid", "link"):
            text = (item.findtext(tag) or "").strip()
            if text:
                keys.append(text)
                break
        else:
            raise AssertionError("a played-back item has neither guid nor link")
    return keys


@dataclass
class PlayedFeed:
    """One feed's captures and how far the poller has consumed them."""

    name: str
    captures: list[bytes]
    position: int = 0
    frozen: bool = False
    requests: int = 0
    consumed: int = -1  # the last capture a request proved consumed
    acknowledged: bool = False  # the last capture was consumed (a 304 for its ETag)

    def etag(self, index: int) -> str:
        return '"' + hashlib.sha256(self.captures[index]).hexdigest()[:16] + f'-{index}"'

    @property
    def finished(self) -> bool:
        return self.position == len(self.captures) - 1 and self.acknowledged

    def served_keys(self) -> set[str]:
        """Keys of every capture served so far (all of them up to the current one)."""
        return {k for body in self.captures[: self.position + 1] for k in capture_keys(body)}


@dataclass
class Playback:
    """The feed server, on its own thread and event loop (the test thread stays free)."""

    feeds: dict[str, PlayedFeed] = field(default_factory=dict)
    hold: threading.Event = field(default_factory=threading.Event)  # set: requests wait
    waiting: int = 0  # requests held right now
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hold.set()
        self._hold_released = threading.Event()
        self._hold_released.set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def add(self, name: str, files: tuple[str, ...]) -> None:
        self.feeds[name] = PlayedFeed(name, [(FEEDS / f).read_bytes() for f in files])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/feed/{name}"

    def freeze(self, frozen: bool = True) -> None:
        """Keep every feed on its current capture (a feed that publishes nothing new)."""
        with self.lock:
            for feed in self.feeds.values():
                feed.frozen = frozen

    def hold_requests(self) -> None:
        """Requests from now on wait (unanswered) until ``release``."""
        self._hold_released.clear()

    def release(self) -> None:
        self._hold_released.set()

    @property
    def finished(self) -> bool:
        with self.lock:
            return all(f.finished for f in self.feeds.values())

    def all_consumed(self) -> bool:
        """Every feed's current capture was consumed (its ETag came back)."""
        with self.lock:
            return all(f.consumed == f.position for f in self.feeds.values())

    def expected(self) -> dict[str, set[str]]:
        """Per feed name, the item keys of every capture played back so far."""
        with self.lock:
            return {name: feed.served_keys() for name, feed in self.feeds.items()}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._hold_released.is_set():
            with self.lock:
                self.waiting += 1
            while not self._hold_released.is_set():
                await asyncio.sleep(0.02)
            with self.lock:
                self.waiting -= 1
        name = request.match_info["name"]
        with self.lock:
            feed = self.feeds[name]
            feed.requests += 1
            current = feed.etag(feed.position)
            if request.headers.get("If-None-Match") == current:
                feed.consumed = feed.position
                if feed.position + 1 < len(feed.captures) and not feed.frozen:
                    feed.position += 1
                else:
                    feed.acknowledged = feed.position == len(feed.captures) - 1
                    return web.Response(status=304, headers={"ETag": current})
            body, etag = feed.captures[feed.position], feed.etag(feed.position)
        headers = {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": etag}
        return web.Response(body=body, headers=headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/feed/{name}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def start(self) -> Playback:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def stop(self) -> None:
        self.release()
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
