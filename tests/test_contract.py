"""Property-based contract test: schemathesis drives the live app from its own ``/openapi.json``.

The real app serves on loopback (an ``aiohttp`` runner in a thread of its own) over a small
seeded database. For every documented operation schemathesis generates valid and invalid
requests; every response must be non-5xx and match the document (status code, media type,
headers, body), and invalid requests must be refused. Seeded and bounded, so a run is the
same every time and takes seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.openapi import document
from services.config import Settings
from services.core.errors import InvalidInput
from services.core.feedurl import normalise_feed_url
from tests.test_openapi import documented_operations, seed

# Per operation and generation mode; with ~28 operations the whole file stays well under 60 s.
EXAMPLES = 20
# Webhook targets never leave loopback: port 9 (discard) refuses connections at once.
HOOK_URL = "http://127.0.0.1:9/hook"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = sorted(
    f"{method.upper()} {path}" for method, path in documented_operations(document())
)


class LiveServer:
    """The app served by a real ``web.AppRunner`` on 127.0.0.1, its loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def request_headers(auth_headers: dict[str, str]) -> dict[str, str]:
    """The one place that decides what every generated request carries: a read+write key."""
    return dict(auth_headers)


@pytest.fixture
def live_api(settings: Settings, db: sessionmaker[Session]) -> Iterator[str]:
    seed(db, webhook_url=HOOK_URL)
    with LiveServer(create_app(settings)) as server:
        yield server.url


def keep_webhooks_on_loopback(case: Any) -> None:
    """Point any acceptable webhook URL in a generated body at the loopback hook.

    A URL the API would refuse stays as generated, so refusals are still exercised; one it
    would accept must not make the test ping a public address.
    """
    body = case.body
    if not case.path.startswith("/v1/subscriptions") or not isinstance(body, dict):
        return
    url = body.get("url")
    if not isinstance(url, str):
        return
    try:
        normalise_feed_url(url)
    except InvalidInput:
        return
    body["url"] = HOOK_URL


def exercise(op: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> None:
    """Send ``EXAMPLES`` generated requests of ``mode`` and check every response."""
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    # Fixed headers are sent as given: Authorization is never generated or negated.
    @given(case=op.as_strategy(generation_mode=mode, headers=headers))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        keep_webhooks_on_loopback(case)
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_honours_its_contract(
    live_api: str, request_headers: dict[str, str], operation: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json", timeout=10)
    method, path = operation.split(" ", 1)
    op = schema[path][method]
    definition = document()["paths"][path][method.lower()]
    # With nothing to send there is nothing to get wrong: no negative cases exist.
    inputs = definition.get("parameters") or definition.get("requestBody")
    modes = (
        (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if inputs else (GenerationMode.POSITIVE,)
    )
    for mode in modes:
        exercise(op, mode, live_api, request_headers)
