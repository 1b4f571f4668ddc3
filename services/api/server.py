"""Serve the API on the configured address until SIGINT or SIGTERM, in one or more processes."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import socket
import threading
from multiprocessing.queues import Queue

from aiohttp import web

from services.api.app import create_app
from services.config import Settings
from services.logs import setup_logging
from services.procs import die_with_parent, tune_gc

log = logging.getLogger(__name__)

# Requests are short reads; in-flight ones get this long to finish on shutdown.
SHUTDOWN_TIMEOUT = 10.0


def run(settings: Settings) -> None:
    """Serve the API on ``api_host:api_port`` in ``api_processes`` processes until signalled.

    One process serves in this process. More are children of this one, each with its own
    listening socket on the same port (``SO_REUSEPORT``: the kernel spreads connections over
    them), started and restarted like the worker pool; SIGTERM or SIGINT stops them all, each
    finishing its requests in flight. The announced port is the real one when ``api_port``
    is 0, and the announcement comes once every process is serving.
    """
    setup_logging(settings.log_level, "api", settings.log_format)
    if settings.api_processes > 1:
        _supervise(settings)
        return
    sock = bind(settings.api_host, settings.api_port)
    try:
        web.run_app(
            _app(settings),
            sock=sock,
            print=lambda *_: _announce(sock),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=True,
        )
    finally:
        sock.close()
    log.info("api.stopped")


def _app(settings: Settings) -> web.Application:
    app = create_app(settings)

    async def settled(_: web.Application) -> None:
        # Once the engine and clients exist: they live as long as the process.
        tune_gc()

    app.on_startup.append(settled)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to."""
    family, address = _address(host, port)
    return socket.create_server(address, family=family)


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, (str(address[0]), int(address[1]))


def _announce(sock: socket.socket) -> None:
    # On stdout, so that a supervisor or a test can wait for it.
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"newsdesk api listening on http://{shown}:{port}", flush=True)


def _reserve(host: str, port: int) -> socket.socket:
    """The port every API process will listen on, held by a bound socket that never listens.

    The kernel hands connections only to listening sockets, so this one takes no share of
    them; it keeps ``api_port`` 0 resolved to one port for the children and their restarts.
    """
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _supervise(settings: Settings) -> None:
    """Run ``api_processes`` serving children under the worker pool's supervisor."""
    from workers.pool import supervise

    count = settings.api_processes
    reserved = _reserve(settings.api_host, settings.api_port)
    ready: Queue[int] = multiprocessing.get_context("spawn").Queue()
    host, port = reserved.getsockname()[:2]
    child_settings = settings.with_overrides(api_host=host, api_port=port)
    watcher = threading.Thread(
        target=_announce_when_ready, args=(ready, count, reserved), daemon=True
    )
    watcher.start()
    log.info("api.starting processes=%d port=%d", count, child_settings.api_port)
    try:
        supervise(child_settings, count=count, target=functools.partial(_serve, ready))
    finally:
        reserved.close()
    log.info("api.stopped processes=%d", count)


def _announce_when_ready(ready: Queue[int], count: int, reserved: socket.socket) -> None:
    serving: set[int] = set()
    while len(serving) < count:
        serving.add(ready.get())
    _announce(reserved)


def _serve(ready: Queue[int], settings: Settings, index: int) -> None:
    """One serving child: the app on a ``SO_REUSEPORT`` socket of the shared port."""
    die_with_parent()
    setup_logging(settings.log_level, "api", settings.log_format)
    web.run_app(
        _app(settings),
        host=settings.api_host,
        port=settings.api_port,
        reuse_port=True,
        print=lambda *_: ready.put(index),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=True,
    )
    log.info("api.stopped index=%d", index)
