"""Loopback webhook receiver that verifies, deduplicates and can misbehave on purpose.

It does what the README asks of a receiver: verify the Standard Webhooks signature with the
``standardwebhooks`` package, then process each ``webhook-id`` once (a repeat is answered
2xx and not processed again). Its ``mode`` scripts the faults: ``ok``; ``error`` (500, the
event is not processed); ``drop`` (the event is processed, then the connection is closed
before any answer, as when a receiver crashes after committing); ``down`` (the port is
closed: connections are refused).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Endpoint:
    """One subscription's path on the receiver, with its secret and what it processed."""

    path: str
    secret: str
    received: Counter[str] = field(default_factory=Counter)  # webhook-id -> POSTs seen
    processed: Counter[str] = field(default_factory=Counter)  # webhook-id -> times processed
    bad_signatures: int = 0


class Receiver:
    """An aiohttp server on 127.0.0.1 (own thread and loop) holding several endpoints."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.mode = "ok"
        self.port = 0
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    def endpoint(self, path: str, secret: str) -> Endpoint:
        self.endpoints[path] = Endpoint(path, secret)
        return self.endpoints[path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "down" and request.transport is not None:
            # A kept-alive connection opened before the port closed: cut it as well.
            request.transport.abort()
            return web.Response(status=503)
        body = await request.read()
        with self.lock:
            endpoint = self.endpoints.get(request.path)
            mode = self.mode
        if endpoint is None:
            return web.Response(status=404)
        try:
            Webhook(endpoint.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self.lock:
                endpoint.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        msg_id = request.headers["webhook-id"]
        with self.lock:
            endpoint.received[msg_id] += 1
            if mode != "error" and msg_id not in endpoint.processed:
                endpoint.processed[msg_id] += 1  # the receiver's side effect, once per id
        if mode == "error":
            return web.Response(status=500, text="receiver trouble")
        if mode == "drop" and request.transport is not None:
            request.transport.abort()  # processed, but the sender never hears back
        return web.Response(text="ok")

    async def _listen(self) -> None:
        assert self.runner is not None
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()
        self.port = self.runner.addresses[0][1]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await self.runner.setup()
        await self._listen()

    async def _close_site(self) -> None:
        if self.site is not None:
            await self.site.stop()
            self.site = None

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)  # type: ignore[arg-type]

    def start(self) -> Receiver:
        self.thread.start()
        self._call(self._start())
        return self

    def set_mode(self, mode: str) -> None:
        """Switch behaviour; ``down`` closes the listening socket, leaving it reopens it."""
        with self.lock:
            previous, self.mode = self.mode, mode
        if mode == "down" and previous != "down":
            self._call(self._close_site())
        elif mode != "down" and previous == "down":
            self._call(self._listen())

    def stop(self) -> None:
        if self.runner is not None:
            self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
