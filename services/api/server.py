"""Serve the API on the configured address until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import socket

from aiohttp import web

from services.api.app import create_app
from services.config import Settings
from services.logs import setup_logging

log = logging.getLogger(__name__)

# Requests are short reads; in-flight ones get this long to finish on shutdown.
SHUTDOWN_TIMEOUT = 10.0


def run(settings: Settings) -> None:
    """Serve ``create_app(settings)`` on ``api_host:api_port``, blocking until signalled.

    The socket is bound here so that the announced port is the real one when ``api_port``
    is 0; the announcement comes once aiohttp has started serving on it.
    """
    setup_logging(settings.log_level, "api")
    sock = bind(settings.api_host, settings.api_port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    line = f"newsdesk api listening on http://{shown}:{port}"

    def announce(*_: object) -> None:
        # On stdout, so that a supervisor or a test can wait for it.
        print(line, flush=True)

    try:
        web.run_app(
            create_app(settings),
            sock=sock,
            print=announce,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handle_signals=True,
        )
    finally:
        sock.close()
    log.info("api.stopped")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to."""
    family, _, _, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address[:2], family=family)
