"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine runs here)."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
import yaml

from services.cli import _parser
from services.config import ENV_VARS, Settings
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
ROLES = ("migrate", "api", "poller", "worker", "dispatcher", "deliver")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` becomes the default, ``${VAR:?message}`` a placeholder."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{\w+:\?[^}]*\}", "secret", value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize("name", ROLES)
def test_every_role_runs_a_real_subcommand(name: str) -> None:
    command = COMPOSE["services"][name]["command"]
    assert command[0] == "newsdesk"
    sub = _subcommands()
    assert command[1] in sub
    sub[command[1]].parse_args(command[2:])  # raises SystemExit on an unknown flag


@pytest.mark.parametrize("name", ROLES)
def test_environment_is_known_to_the_settings(name: str) -> None:
    env = _env(COMPOSE["services"][name])
    assert set(env) <= set(ENV_VARS), set(env) - set(ENV_VARS)
    assert "DATABASE_URL" in env and "REDIS_URL" in env
    resolved = {k: _interpolate(v) for k, v in env.items()}
    settings = Settings.from_env(resolved)
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert not settings.embedded_redis


def test_redis_is_durable_and_never_evicts() -> None:
    command = " ".join(COMPOSE["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert COMPOSE["services"]["redis"]["volumes"]


def test_api_port_and_healthcheck_path_exist() -> None:
    from services.api.app import create_app

    api = COMPOSE["services"]["api"]
    assert api["ports"] == ["8080:8080"]
    assert _env(api)["NEWSDESK_API_PORT"] == "8080"
    probe = " ".join(api["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8080(/\w+)", probe)
    assert path is not None
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"})
    routes = {r.resource.canonical for r in create_app(settings).router.routes() if r.resource}
    assert path.group(1) in routes


def test_worker_grace_period_outlasts_the_job_timeout() -> None:
    worker = COMPOSE["services"]["worker"]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > int(_env(worker)["NEWSDESK_JOB_TIMEOUT"])
    assert worker["deploy"]["replicas"] == 2


def test_roles_wait_for_what_they_need() -> None:
    services = COMPOSE["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "poller", "worker", "dispatcher", "deliver"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["poller"]["volumes"] == ["./seeds:/app/seeds:ro"]


def test_dockerfile_runs_as_non_root_and_installs_the_package() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER newsdesk$", text, re.M)
    assert "pip install" in text
    assert "COPY migrations migrations" in text


def test_deliver_grace_period_outlasts_the_webhook_timeout() -> None:
    deliver = COMPOSE["services"]["deliver"]
    grace = int(deliver["stop_grace_period"].rstrip("s"))
    assert grace > float(_env(deliver)["NEWSDESK_WEBHOOK_TIMEOUT"])


def test_up_runs_every_long_running_role() -> None:
    from services.supervisor import ROLES as UP_ROLES

    assert set(UP_ROLES) == {"api", "poller", "worker", "dispatcher", "deliver"}
    assert set(UP_ROLES) <= set(_subcommands())
