"""The README's configuration table lists exactly the variables the settings read."""

from __future__ import annotations

import re

from services.config import ENV_VARS
from tests.conftest import REPO

VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return rows[2:]  # after the header and its rule


def test_every_setting_is_documented_with_a_default_and_a_meaning() -> None:
    rows = _table_rows(_section("Configuration"))
    documented: list[str] = []
    for row in rows:
        assert len(row) == 3, row
        names, default, meaning = row
        found = VARIABLE.findall(names)
        assert found, row
        assert default and meaning, row
        documented += found
    assert len(documented) == len(set(documented)), "a variable is listed twice"
    missing = set(ENV_VARS) - set(documented)
    unknown = set(documented) - set(ENV_VARS)
    assert not missing, f"ENV_VARS entries missing from the README table: {sorted(missing)}"
    assert not unknown, f"README table lists variables the settings do not read: {unknown}"


def test_the_deployment_section_covers_the_operations_topics() -> None:
    section = _section("Deployment")
    for topic in ("### Quick start", "### Scaling", "### Backups", "### Upgrading", "/metrics"):
        assert topic in section, topic
    assert "docker compose run --rm api keys create" in section
    for tool in ("pg_dump", ".backup", "append-only file", "Reconciliation"):
        assert tool.lower() in section.lower(), tool
