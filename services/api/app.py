"""The aiohttp application factory, shared by the server and the tests."""

from __future__ import annotations

from aiohttp import web

from services.api import docs, feeds, handlers, metrics, stories, subscriptions
from services.api.auth import gate_middleware, gate_resources
from services.api.cache import cache_middleware, cache_resources
from services.api.context import (
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    MAX_REQUEST_BYTES,
    SETTINGS,
    resources,
)
from services.api.errors import problem_middleware
from services.api.observe import request_context
from services.config import Settings


def create_app(settings: Settings) -> web.Application:
    """The API for ``settings``; its SQL engine and Redis client live as long as it runs."""
    app = web.Application(
        # The cache comes after the gate: keys, scopes and rate limits apply to its answers.
        middlewares=[request_context, problem_middleware, gate_middleware, cache_middleware],
        client_max_size=MAX_REQUEST_BYTES,
        handler_args={
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
        },
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(gate_resources)
    app.cleanup_ctx.append(cache_resources)
    app.add_routes(handlers.routes)
    app.add_routes(feeds.routes)
    app.add_routes(stories.routes)
    app.add_routes(subscriptions.routes)
    app.add_routes(docs.routes)
    app.add_routes(metrics.routes)
    return app
