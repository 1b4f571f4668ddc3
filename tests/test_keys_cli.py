"""`newsdesk keys ...` run in-process against the test database, then used on the live API."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.config import Settings

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(newsdesk_cli: Run) -> Run:
    """``newsdesk keys ARGS`` -> (exit code, stdout, stderr), on the test database."""
    return partial(newsdesk_cli, "keys")


async def test_create_list_use_revoke(
    cli: Run, settings: Settings, db: sessionmaker[Session]
) -> None:
    code, out, err = cli("create", "--name", "dashboard")
    assert code == 0
    reader = out.strip()  # stdout holds the token alone, for `TOKEN=$(newsdesk keys create …)`
    assert re.fullmatch(r"nd_[A-Za-z0-9_-]{51}", reader)
    assert "created key 1 'dashboard' (read)" in err and reader[:11] in err
    assert "shown only now" in err

    code, out, _ = cli("create", "--name", "ingest bot", "--scope", "write", "--scope", "read")
    writer = out.strip()
    assert code == 0 and writer != reader

    code, out, _ = cli("list")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "PREFIX", "SCOPES", "CREATED", "LAST-USED", "REVOKED", "NAME"]
    first, second = (row.split() for row in rows)
    assert first[:3] == ["1", reader[:11], "read"] and first[4:] == ["-", "-", "dashboard"]
    assert second[:3] == ["2", writer[:11], "read,write"] and second[-2:] == ["ingest", "bot"]
    assert reader not in out and writer not in out

    async with TestClient(TestServer(create_app(settings))) as client:
        auth = {"Authorization": f"Bearer {reader}"}
        assert (await client.get("/v1/articles", headers=auth)).status == 200
        assert (
            await client.post("/v1/feeds", json={"url": "https://a.test/"}, headers=auth)
        ).status == 403

        code, out, _ = cli("revoke", "1")
        assert code == 0 and out == f"revoked key 1 ({reader[:11]}, 'dashboard')\n"
        assert (await client.get("/v1/articles", headers=auth)).status == 401
        auth = {"Authorization": f"Bearer {writer}"}
        assert (await client.get("/v1/articles", headers=auth)).status == 200

    code, out, _ = cli("list", "--json")
    listed = json.loads(out)
    assert [k["name"] for k in listed] == ["dashboard", "ingest bot"]
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    assert listed[0]["last_used_at"] is not None and listed[0]["scopes"] == ["read"]
    assert set(listed[0]) == {
        "id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"
    }  # fmt: skip

    code, out, _ = cli("revoke", "1")
    assert code == 0 and "already revoked" in out

    # Only hashes are stored.
    with db() as session:
        stored = " ".join(
            str(v) for r in session.execute(text("SELECT * FROM api_keys")) for v in r
        )
    assert reader not in stored and writer not in stored


def test_errors(cli: Run) -> None:
    code, _, err = cli("revoke", "42")
    assert code == 1 and err == "newsdesk keys: error [not_found]: no API key 42\n"
    code, out, err = cli("create", "--name", "x", "--scope", "admin")
    assert code == 2 and out == "" and "unknown scope(s): admin" in err
    code, out, err = cli("create", "--name", "   ")
    assert code == 2 and out == "" and "name must be" in err
    with pytest.raises(SystemExit):
        cli("revoke", "abc")
    with pytest.raises(SystemExit):
        cli("create")  # --name is required
    code, out, _ = cli("list")
    assert code == 0 and len(out.splitlines()) == 1  # the header only
