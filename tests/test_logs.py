"""Log output: JSON lines with typed fields and bound ids, text for terminals, no secrets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from services.logs import JsonFormatter, TextFormatter, bind, redact, resolve_format

SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWJ5dGVz"
API_KEY = "nd_Q2hhbmdlTWVQbGVhc2VfX19f"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"boom with {SECRET}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("newsdesk.worker", logging.INFO, __file__, 1, msg, args, exc_info)


def test_json_lines_carry_the_event_typed_fields_and_bound_ids() -> None:
    fmt = JsonFormatter("worker[0]")
    with bind(job_id="extract-abc"):
        line = fmt.format(_record("item.processed feed_id=%s status=%s ms=%d", 7, "created", 12))
    entry = json.loads(line)
    assert entry["event"] == "item.processed" and entry["role"] == "worker[0]"
    assert (entry["feed_id"], entry["status"], entry["ms"]) == (7, "created", 12)
    assert entry["job_id"] == "extract-abc" and entry["level"] == "info"
    assert entry["message"] == "item.processed feed_id=7 status=created ms=12"
    # Outside the block the id is no longer bound.
    assert "job_id" not in json.loads(fmt.format(_record("worker.ready pid=%d", 1)))


def test_a_call_outside_the_convention_keeps_its_message_only() -> None:
    entry = json.loads(JsonFormatter("api").format(_record("served %s in %d ms", "/x", 3)))
    assert entry["message"] == "served /x in 3 ms" and "event" not in entry
    assert set(entry) == {"ts", "level", "role", "logger", "message"}


def test_secrets_are_masked_in_every_format() -> None:
    record = _record(
        "subscription.created url=%s secret=%s auth=%s", "https://u:pw@hook.test/x", SECRET,
        f"Bearer {API_KEY}", exc=True,
    )  # fmt: skip
    text = TextFormatter("api").format(record)
    line = JsonFormatter("api").format(record)
    for out in (text, line):
        assert SECRET not in out and API_KEY not in out and "u:pw@" not in out
        assert "[redacted]" in out
    entry = json.loads(line)
    assert entry["secret"] == "[redacted]" and entry["url"] == "https://[redacted]@hook.test/x"
    assert "ValueError" in entry["exc"] and SECRET not in entry["exc"]
    assert redact("feed_id=3 status=ok") == "feed_id=3 status=ok"  # nothing else is touched


def test_format_choice() -> None:
    assert resolve_format("json") == "json" and resolve_format("text") == "text"
    assert resolve_format("nonsense") in {"text", "json"}  # falls back to auto


def test_a_process_logs_json_lines_when_asked() -> None:
    code = (
        "import logging; from services.logs import setup_logging, bind\n"
        "setup_logging('INFO', 'poller')\n"
        "with bind(request_id='r1'):\n"
        "    logging.getLogger('newsdesk.poller').info('poll.done feed_id=%s enqueued=%d', 3, 2)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"NEWSDESK_LOG_FORMAT": "json", "PATH": ""},
    )  # fmt: skip
    (entry,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert (entry["event"], entry["feed_id"], entry["enqueued"]) == ("poll.done", 3, 2)
    assert (entry["role"], entry["request_id"]) == ("poller", "r1")
