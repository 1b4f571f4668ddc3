"""Pure webhook code: signatures (checked against the standardwebhooks library), schedule."""

from __future__ import annotations

import ast
import base64
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.config import Settings
from services.core.errors import ConfigError
from services.webhooks import signing
from services.webhooks.payload import body
from services.webhooks.schedule import AttemptResult, judge

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
# The Standard Webhooks specification's example (also in its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_from_the_specification() -> None:
    assert signing.sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TS, body=SPEC_BODY) == (
        SPEC_SIGNATURE
    )


def _headers(secrets: list[str], ts: int, data: bytes = b'{"a":1}') -> dict[str, str]:
    return signing.headers(secrets, msg_id="42", timestamp=ts, body=data)


def test_the_library_accepts_ours_and_rejects_tampering() -> None:
    secret = signing.new_secret()
    data = b'{"type":"article.created","data":{}}'
    now = int(time.time())
    headers = _headers([secret], now, data)
    assert Webhook(secret).verify(data, headers) == {"type": "article.created", "data": {}}
    with pytest.raises(WebhookVerificationError):  # one byte changed
        Webhook(secret).verify(data.replace(b"{}", b"[]"), headers)
    with pytest.raises(WebhookVerificationError):  # wrong secret
        Webhook(signing.new_secret()).verify(data, headers)
    with pytest.raises(WebhookVerificationError):  # replayed six minutes later
        Webhook(secret).verify(data, _headers([secret], now - 360, data))
    with pytest.raises(WebhookVerificationError):  # from the future
        Webhook(secret).verify(data, _headers([secret], now + 360, data))
    with pytest.raises(WebhookVerificationError):  # id changed: the id is signed too
        Webhook(secret).verify(data, headers | {"webhook-id": "43"})


def test_our_verifier_agrees() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    data = b"{}"
    headers = _headers([new, old], NOW_TS := 1_800_000_000, data)
    signing.verify(old, headers=headers, body=data, now=NOW_TS)
    signing.verify(new, headers=headers, body=data, now=NOW_TS + 300)
    for bad in (
        dict(secret=signing.new_secret(), body=data, now=NOW_TS),
        dict(secret=old, body=b"[]", now=NOW_TS),
        dict(secret=old, body=data, now=NOW_TS + 301),
        dict(secret=old, body=data, now=NOW_TS - 301),
    ):
        with pytest.raises(signing.SignatureError):
            signing.verify(bad["secret"], headers=headers, body=bad["body"], now=bad["now"])  # type: ignore[arg-type]
    with pytest.raises(signing.SignatureError):
        signing.verify(old, headers={"webhook-id": "42"}, body=data, now=NOW_TS)
    v1a_only = headers | {"webhook-signature": headers["webhook-signature"].replace("v1,", "v1a,")}
    with pytest.raises(signing.SignatureError):
        signing.verify(old, headers=v1a_only, body=data, now=NOW_TS)


@given(st.binary(min_size=24, max_size=64), st.binary(max_size=300), st.integers(0, 2**40))
def test_signatures_round_trip_with_the_library(key: bytes, data: bytes, msg: int) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    text = data.decode("latin-1").encode()  # the library signs str(body); keep it UTF-8
    signature = signing.sign(secret, msg_id=str(msg), timestamp=SPEC_TS, body=text)
    expected = Webhook(secret).sign(str(msg), datetime.fromtimestamp(SPEC_TS, UTC), text.decode())
    assert signature == expected


def test_secrets_are_fresh_and_well_formed() -> None:
    made = {signing.new_secret() for _ in range(100)}
    assert len(made) == 100
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(signing.secret_key(secret)) == signing.SECRET_BYTES
    assert "whsec_" not in repr(_record_with_secret())


def _record_with_secret() -> object:
    from services.db.subscriptions import SubscriptionRecord
    from services.webhooks.filters import Filters

    return SubscriptionRecord(
        id=1, url="https://x.test/", description=None, event_types=("article.created",),
        filters=Filters(), enabled=True, disabled_reason=None, disabled_at=None,
        failing_since=None, start_event_id=0, rotating_until=None, created_at=NOW,
        updated_at=NOW, secret=signing.new_secret(), previous_secret=signing.new_secret(),
    )  # fmt: skip


# -- schedule --------------------------------------------------------------------------------

SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


def _after(status: int | None, attempts: int, retry_after: float | None = None) -> object:
    result = AttemptResult(status_code=status, latency_ms=1, retry_after_seconds=retry_after)
    return judge(result, attempts=attempts, schedule=SCHEDULE, now=NOW, rng=random.Random(7),
                 retry_after_cap=3600)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "attempts", "retry_after", "outcome", "low", "high"),
    [
        (200, 1, None, "succeeded", None, None),
        (204, 3, None, "succeeded", None, None),
        (500, 1, None, "failed", 4.5, 5.5),
        (500, 2, None, "failed", 270, 330),
        (None, 3, None, "failed", 1620, 1980),
        (500, 4, None, "dead", None, None),  # the schedule is spent
        (308, 1, None, "failed", 4.5, 5.5),  # a redirect is a failure
        (429, 1, 120.0, "failed", 120, 120),  # Retry-After beats the 5 s step
        (503, 2, 10.0, "failed", 270, 330),  # ... but never shortens one
        (429, 1, 99999.0, "failed", 3600, 3600),  # capped
    ],
)
def test_schedule_table(
    status: int | None,
    attempts: int,
    retry_after: float | None,
    outcome: str,
    low: float | None,
    high: float | None,
) -> None:
    verdict = _after(status, attempts, retry_after)
    assert verdict.status == outcome  # type: ignore[attr-defined]
    when = verdict.next_attempt_at  # type: ignore[attr-defined]
    if low is None:
        assert when is None
    else:
        assert high is not None
        assert timedelta(seconds=low) <= when - NOW <= timedelta(seconds=high)


def test_410_is_gone() -> None:
    verdict = _after(410, 1)
    assert verdict.status == "dead" and verdict.gone  # type: ignore[attr-defined]


def test_default_schedule_spans_about_a_day() -> None:
    settings = Settings.from_env({})
    total = sum(settings.webhook_schedule)
    assert len(settings.webhook_schedule) == 8 and 24 * 3600 < total < 30 * 3600
    assert settings.webhook_timeout == 15 and settings.webhook_disable_after == 5 * 86400
    shrunk = Settings.from_env({"NEWSDESK_WEBHOOK_SCHEDULE": "0, 0.5, 1"})
    assert shrunk.webhook_schedule == (0.0, 0.5, 1.0)
    assert Settings.from_env(shrunk.child_environment()).webhook_schedule == (0.0, 0.5, 1.0)
    with pytest.raises(ConfigError):
        Settings.from_env({"NEWSDESK_WEBHOOK_SCHEDULE": "0,-1"})


def test_payload_is_compact_json() -> None:
    data = body("article.created", NOW, {"article": {"id": 3, "title": "Ça va"}})
    assert data.startswith(b'{"type":"article.created","timestamp":"2026-11-28T12:00:00Z"')
    assert "Ça va".encode() in data


PURE = ["signing.py", "schedule.py", "filters.py", "payload.py"]
IO_MODULES = {"aiohttp", "sqlalchemy", "redis", "rq", "requests", "socket", "asyncio"}


@pytest.mark.parametrize("name", PURE)
def test_pure_webhook_modules_import_no_io(name: str) -> None:
    tree = ast.parse((Path(signing.__file__).parent / name).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {m.split(".")[0] for m in imported} & IO_MODULES


def test_the_readme_stdlib_verifier_works() -> None:
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (code,) = re.findall(r"```python\n(import base64.*?)```", readme, re.S)
    namespace: dict[str, object] = {}
    exec(code, namespace)
    check = namespace["verify"]
    secret, data, now = signing.new_secret(), b'{"type":"article.created"}', int(time.time())
    headers = _headers([signing.new_secret(), secret], now, data)
    assert check(secret, headers, data) is True  # type: ignore[operator]
    assert check(signing.new_secret(), headers, data) is False  # type: ignore[operator]
    assert check(secret, headers, data + b" ") is False  # type: ignore[operator]
    assert check(secret, _headers([secret], now - 400, data), data) is False  # type: ignore[operator]


# -- batches of leases ------------------------------------------------------------------------


@given(
    st.lists(st.integers(1, 30), max_size=120),
    st.integers(1, 60),
    st.integers(1, 8),
)
def test_delivery_batches_keep_every_lease_within_the_size(
    subscribers: list[int], batch: int, spread: int
) -> None:
    from services.queue import delivery_batches

    leased = [(i + 1, 7, sub) for i, sub in enumerate(subscribers)]
    jobs = delivery_batches(leased, batch=batch, spread=spread)
    assert sorted(pair for job in jobs for pair in job) == [(d, t) for d, t, _ in leased]
    assert all(0 < len(job) <= batch for job in jobs)
    if leased:
        assert len(jobs) >= min(spread, len(set(subscribers)))
    # A subscription's leases sit next to each other across the jobs, in delivery id order.
    order = [d for job in jobs for d, _ in job]
    of = {d: sub for d, _, sub in leased}
    assert order == sorted(order, key=lambda d: (of[d], d))


def test_delivery_batches_spread_a_hand_out_over_the_processes() -> None:
    from services.queue import delivery_batches

    leased = [(d, 1, d % 10) for d in range(1, 21)]  # ten subscriptions, two each
    assert [len(job) for job in delivery_batches(leased, batch=50, spread=4)] == [5, 5, 5, 5]
    assert [len(job) for job in delivery_batches(leased, batch=6, spread=1)] == [5, 5, 5, 5]
    one = [(1, 1, 3), (2, 1, 3)]
    assert delivery_batches(one, batch=50, spread=4) == [[(1, 1), (2, 1)]]
    assert delivery_batches([], batch=50, spread=4) == []
