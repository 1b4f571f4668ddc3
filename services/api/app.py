"""The aiohttp application factory, shared by the server and the tests."""

from __future__ import annotations

from aiohttp import web

from services.api import feeds, handlers, stories, subscriptions
from services.api.context import MAX_REQUEST_BYTES, SETTINGS, resources
from services.api.errors import problem_middleware
from services.config import Settings


def create_app(settings: Settings) -> web.Application:
    """The API for ``settings``; its SQL engine and Redis client live as long as it runs."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources)
    app.add_routes(handlers.routes)
    app.add_routes(feeds.routes)
    app.add_routes(stories.routes)
    app.add_routes(subscriptions.routes)
    return app
