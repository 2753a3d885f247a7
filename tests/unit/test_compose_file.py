"""docker-compose.yaml and .env.example: what `docker compose config` would check, and this project's rules.

No Docker engine runs here, so the file is validated against the Compose Specification's JSON schema (the copy
shipped by the `check-jsonschema` package), after the same interpolation Compose does with the values of
`.env.example`; then the structure the deployment relies on is checked: one shared Airflow environment, the
CeleryExecutor, a single JWT secret, the sandbox only under its profile, and every variable documented.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from kombo_sync.deploy.bootstrap import GENERATE_PLACEHOLDER, init_env
from tests.support.compose import ComposeError, ComposeFile, documented_keys, read_env_file

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SANDBOX_SERVICES = {"kombo-sandbox", "platform-standin"}
CONNECTIONS = (
    "KOMBO_DEFAULT",
    "KOMBO_STATE",
    "KOMBO_WAREHOUSE",
    "KOMBO_PLATFORM",
    "KOMBO_SMTP",
    "KOMBO_WEBHOOK",
)


@pytest.fixture(scope="module")
def compose() -> ComposeFile:
    return ComposeFile.with_env_file(COMPOSE, ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_schema():
    try:
        from importlib.resources import files

        text = (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        if os.environ.get("CI") == "true":
            pytest.fail("check-jsonschema (ships the Compose Specification schema) is not installed")
        pytest.skip("check-jsonschema (ships the Compose Specification schema) is not installed")
    from jsonschema import Draft202012Validator

    schema = json.loads(text)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def airflow_services(compose: ComposeFile) -> list[str]:
    """Services that run Airflow itself (their argv or init script calls `airflow`)."""
    return [
        name
        for name in compose.services
        if compose.command(name)[:1] == ["airflow"] or "airflow db migrate" in " ".join(compose.command(name))
    ]


def _errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def test_valid_against_the_compose_specification(compose, compose_schema):
    assert _errors(compose_schema, compose.raw) == []
    assert _errors(compose_schema, compose.data) == []


def test_schema_check_catches_a_misspelt_key(compose, compose_schema):
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["airflow-worker"]["enviroment"] = {"X": "1"}
    assert any("enviroment" in error for error in _errors(compose_schema, broken))


def test_refuses_to_interpolate_without_the_secrets():
    with pytest.raises(ComposeError, match="POSTGRES_PASSWORD|AIRFLOW_JWT_SECRET|AIRFLOW_FERNET_KEY"):
        ComposeFile(COMPOSE, {})
    values = read_env_file(ENV_EXAMPLE)
    for required in (
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_FERNET_KEY",
        "KOMBO_WEBHOOK_SECRET",
        "AIRFLOW_CONN_KOMBO_DEFAULT",
    ):
        with pytest.raises(ComposeError, match=required):
            ComposeFile(COMPOSE, {**values, required: ""})


def test_the_official_airflow_services_are_there(compose):
    expected = {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    assert expected <= set(compose.services)
    commands = {name: compose.command(name) for name in compose.services}
    assert commands["airflow-apiserver"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-triggerer"] == ["airflow", "triggerer"]
    assert commands["airflow-worker"] == ["airflow", "celery", "worker"]


def test_every_airflow_service_shares_the_common_environment(compose):
    common = compose.data["x-airflow-common"]["environment"]
    services = airflow_services(compose)
    assert set(services) >= {"airflow-init", "airflow-apiserver", "airflow-worker", "airflow-triggerer"}
    for name in services:
        env = compose.environment(name)
        different = {key for key, value in common.items() if env.get(key) != str(value)}
        assert not different, f"{name} differs from x-airflow-common on {sorted(different)}"
        assert compose.services[name]["image"] == compose.data["x-airflow-common"]["image"]


def test_airflow_services_merge_the_anchor_itself():
    # The anchor, not a copy: a key added to x-airflow-common reaches every Airflow service.
    root = yaml.compose(COMPOSE.read_text())
    top = {key.value: value for key, value in root.value}
    common_node = top["x-airflow-common"]
    common_env_node = {k.value: v for k, v in common_node.value}["environment"]
    services = {key.value: value for key, value in top["services"].value}
    for name, node in services.items():
        if not name.startswith("airflow-"):
            continue
        pairs = {key.value: value for key, value in node.value}
        assert pairs.get("<<") is common_node, f"{name} does not merge *airflow-common"
        if "environment" in pairs:
            env_pairs = {key.value: value for key, value in pairs["environment"].value}
            assert env_pairs.get("<<") is common_env_node, (
                f"{name} overrides environment without *airflow-common-env"
            )


def test_celery_executor_and_one_jwt_secret(compose):
    values = read_env_file(ENV_EXAMPLE)
    for name in airflow_services(compose):
        env = compose.environment(name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == values["AIRFLOW_JWT_SECRET"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == values["AIRFLOW_FERNET_KEY"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    raw_common = yaml.safe_load(COMPOSE.read_text())["x-airflow-common"]["environment"]
    assert raw_common["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")


def test_execution_api_points_at_the_api_server(compose):
    url = compose.environment("airflow-worker")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == "http://airflow-apiserver:8080/execution/"
    assert any(str(port).endswith(":8080") for port in compose.services["airflow-apiserver"]["ports"])


def test_state_store_lives_in_its_own_database(compose):
    env = compose.environment("airflow-scheduler")
    assert env["AIRFLOW_CONN_KOMBO_STATE"].endswith("@postgres:5432/kombo_state")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    for conn in CONNECTIONS:
        assert f"AIRFLOW_CONN_{conn}" in env
    webhook = json.loads(env["AIRFLOW_CONN_KOMBO_WEBHOOK"])
    assert webhook["password"] == read_env_file(ENV_EXAMPLE)["KOMBO_WEBHOOK_SECRET"]


def test_init_migrates_both_databases_and_creates_the_pool(compose):
    script = " ".join(compose.command("airflow-init"))
    for step in (
        "airflow db migrate",
        "python -m kombo_sync.deploy ensure-state-db",
        "python -m kombo_sync.state migrate",
        "airflow pools set kombo_api",
        "python -m kombo_sync.deploy write-passwords",
    ):
        assert step in script
    assert script.index("ensure-state-db") < script.index("kombo_sync.state migrate")
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "airflow-triggerer"):
        condition = compose.services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully"


def test_sandbox_services_only_under_their_profile(compose):
    for name, spec in compose.services.items():
        if name in SANDBOX_SERVICES:
            assert spec.get("profiles") == ["sandbox"], name
        else:
            argv = " ".join(compose.command(name))
            assert "sandbox" not in re.sub(r"kombo_sync\S*", "", argv) or spec.get("profiles"), name
            assert not SANDBOX_SERVICES & set(spec.get("depends_on") or {}), f"{name} depends on the sandbox"
    sandbox_argv = compose.command("kombo-sandbox")
    assert "--webhook-url=http://airflow-apiserver:8080/kombo/webhooks" in sandbox_argv


def test_references_resolve(compose):
    volumes = set(compose.data.get("volumes") or {})
    for name, spec in compose.services.items():
        for target in spec.get("depends_on") or {}:
            assert target in compose.services, f"{name} depends on unknown {target}"
        for mount in spec.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        build = spec.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_every_variable_is_documented_in_env_example(compose):
    documented = documented_keys(ENV_EXAMPLE)
    values = read_env_file(ENV_EXAMPLE)
    for use in compose.variable_uses():
        assert use.name in documented, f"${{{use.name}}} is used but not in .env.example"
        if use.required:
            assert values.get(use.name), f"{use.name} is required but has no value in .env.example"


def test_env_example_holds_placeholders_not_secrets():
    values = read_env_file(ENV_EXAMPLE)
    for key in (
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "POSTGRES_PASSWORD",
        "KOMBO_WEBHOOK_SECRET",
        "KOMBO_ERASURE_SALT",
    ):
        assert values[key] == GENERATE_PLACEHOLDER
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    json.loads(values["AIRFLOW_CONN_KOMBO_DEFAULT"])
    json.loads(values["AIRFLOW_CONN_KOMBO_PLATFORM"])


def test_init_env_writes_a_usable_env_file(tmp_path):
    from cryptography.fernet import Fernet

    target = tmp_path / ".env"
    generated = init_env(ENV_EXAMPLE, target)
    assert {
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_FERNET_KEY",
        "POSTGRES_PASSWORD",
        "KOMBO_WEBHOOK_SECRET",
        "KOMBO_ERASURE_SALT",
    } <= set(generated)
    values = read_env_file(target)
    assert GENERATE_PLACEHOLDER not in values.values()
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())
    assert target.stat().st_mode & 0o077 == 0
    compose = ComposeFile(COMPOSE, values)
    env = compose.environment("airflow-worker")
    assert values["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert values["POSTGRES_PASSWORD"] in env["AIRFLOW_CONN_KOMBO_WAREHOUSE"]
    with pytest.raises(FileExistsError):
        init_env(ENV_EXAMPLE, target)
