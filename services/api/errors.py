"""The one error middleware: every failure answers ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import OperationalError

from services.api.context import MAX_REQUEST_BYTES
from services.core.errors import Conflict, InvalidInput, NewsdeskError, NotFound

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"


class Unprocessable(InvalidInput):
    """A well-formed request body whose content fails validation (422)."""

    code = "unprocessable"


# Most specific first: Unprocessable is an InvalidInput.
_DOMAIN_STATUS: tuple[tuple[type[NewsdeskError], int], ...] = (
    (Unprocessable, 422),
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
)
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}
# Headers of aiohttp's own error responses that the problem response keeps.
_KEPT_HEADERS = ("Allow", "Retry-After")


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """A problem+json response with a stable ``urn:newsdesk:problem:<code>`` type."""
    body: dict[str, Any] = {
        "type": f"urn:newsdesk:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if param is not None:
        body["param"] = param
    body.update(extra or {})
    return web.json_response(body, status=status, content_type=PROBLEM_TYPE, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors, aiohttp's HTTP errors and unexpected failures to problem+json."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http(request, exc)
    except NewsdeskError as err:
        status = next((s for kind, s in _DOMAIN_STATUS if isinstance(err, kind)), None)
        if status is None:
            log.exception("api.error method=%s path=%s", request.method, request.path)
            return problem(500, "internal", "an unexpected error occurred")
        param = err.param if isinstance(err, InvalidInput) else None
        return problem(status, err.code, err.detail, param=param)
    except OperationalError:
        # The database is down, restarting or locked: worth retrying, not a bug of ours.
        log.exception("api.storage_unavailable method=%s path=%s", request.method, request.path)
        return problem(
            503, "storage_unavailable", "the database is unavailable; retry later",
            headers={"Retry-After": "5"},
        )  # fmt: skip
    except Exception:
        log.exception("api.error method=%s path=%s", request.method, request.path)
        return problem(500, "internal", "an unexpected error occurred")


def _from_http(request: web.Request, exc: web.HTTPException) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, f"http_{status}")
    if status == 404:
        detail = f"no resource at {request.path[:200]}"
    elif status == 405:
        allowed = exc.headers.get("Allow", "")
        detail = f"method {request.method} not allowed here; allowed: {allowed}"
    elif status == 413:
        detail = f"request body larger than {MAX_REQUEST_BYTES} bytes"
    else:
        detail = exc.text or HTTPStatus(status).phrase
    headers = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
    return problem(status, code, detail, headers=headers)
