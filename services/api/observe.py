"""Per-request log context: a request id on every line and one summary line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.logs import bind

log = logging.getLogger("newsdesk.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEADER = "X-Request-ID"
# A caller's id is kept when it is short and plain (it may come from a proxy); else a new one.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request id to the request's log lines, echo it, log the outcome once."""
    given = request.headers.get(HEADER, "")
    request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex[:16]
    started = time.monotonic()
    status = 500
    with bind(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            response.headers[HEADER] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[HEADER] = request_id
            raise
        finally:
            if request.path not in _QUIET:  # probes and scrapes would drown the rest
                log.info(
                    "api.request method=%s path=%s status=%d ms=%d",
                    request.method, request.path[:200], status,
                    (time.monotonic() - started) * 1000,
                )  # fmt: skip
