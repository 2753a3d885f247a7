"""The compose-file reader (interpolation as Compose does it, .env parsing, container -> local translation) and
the one-off init steps of `python -m kombo_sync.deploy`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kombo_sync.deploy import bootstrap
from kombo_sync.deploy.__main__ import main as deploy_main
from tests.support.compose import (
    ComposeError,
    ComposeFile,
    interpolate,
    iter_variables,
    read_env_file,
    rewrite_addresses,
    rewrite_paths,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A}", {}, ""),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:+r}", {"A": "x"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A:-${B:-z}}", {}, "z"),
        ("${A:-x${B}y}", {"B": "-"}, "x-y"),
        ("$${HOSTNAME} $$1", {"HOSTNAME": "no"}, "${HOSTNAME} $1"),
        ("pre ${A} post $", {"A": "1"}, "pre 1 post $"),
    ],
)
def test_interpolate_like_compose(text, variables, expected):
    assert interpolate(text, variables) == expected


def test_required_variables_raise_with_their_message():
    with pytest.raises(ComposeError, match="set it please"):
        interpolate("${S:?set it please}", {"S": ""})
    with pytest.raises(ComposeError, match="S"):
        interpolate("${S?}", {})
    assert interpolate("${S?}", {"S": ""}) == ""


def test_malformed_interpolation_is_an_error():
    for text in ("${A", "${-x}", "${A!x}"):
        with pytest.raises(ComposeError):
            interpolate(text, {})


def test_iter_variables_sees_nested_and_skips_escaped():
    uses = list(iter_variables("${A:-${B}} $$C $D ${E:?msg}"))
    assert [(u.name, u.operator) for u in uses] == [("A", ":-"), ("B", ""), ("D", ""), ("E", ":?")]
    assert uses[-1].required and uses[0].has_default


def test_read_env_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n"
        "\n"
        "USER=airflow\n"
        "export PASS=s3cret  # inline comment\n"
        "URL=postgresql://${USER}:${PASS}@db/x\n"
        'JSON=\'{"a": "${USER}"}\'\n'
        'DOUBLE="line ${USER}\\nnext"\n'
        "EMPTY=\n"
    )
    values = read_env_file(path)
    assert values["PASS"] == "s3cret"
    assert values["URL"] == "postgresql://airflow:s3cret@db/x"
    assert json.loads(values["JSON"]) == {"a": "${USER}"}  # single quotes: literal
    assert values["DOUBLE"] == "line airflow\nnext"
    assert values["EMPTY"] == ""
    path.write_text("not a pair\n")
    with pytest.raises(ComposeError, match=":1"):
        read_env_file(path)


def test_rewrite_addresses_and_paths():
    addresses = {"postgres:5432": "127.0.0.1:5432", "postgres:5432/airflow": "127.0.0.1:5432/meta_1"}
    assert (
        rewrite_addresses("postgresql+psycopg2://u:p@postgres:5432/airflow", addresses)
        == "postgresql+psycopg2://u:p@127.0.0.1:5432/meta_1"
    )
    assert rewrite_addresses("postgresql://u@postgres:5432/kombo_state", addresses) == (
        "postgresql://u@127.0.0.1:5432/kombo_state"
    )
    # Only URL authorities are touched, and only whole names.
    assert rewrite_addresses("postgres:5432 mypostgres:5432", addresses) == "postgres:5432 mypostgres:5432"
    assert rewrite_addresses("redis://redis:6379/01", {"redis:6379/0": "x"}) == "redis://redis:6379/01"
    paths = {"/usr/local/airflow": "/tmp/home", "/usr/local/airflow/dags": "/src/dags"}
    assert rewrite_paths("/usr/local/airflow/dags", paths) == "/src/dags"
    assert rewrite_paths("/usr/local/airflow/auth/p.json", paths) == "/tmp/home/auth/p.json"
    assert (
        rewrite_paths("/usr/local/airflowx /opt/usr/local/airflow", paths)
        == "/usr/local/airflowx /opt/usr/local/airflow"
    )


def test_process_spec_translates_a_worker(tmp_path):
    variables = read_env_file(ROOT / ".env.example")
    compose = ComposeFile(ROOT / "docker-compose.yaml", {**variables, "AIRFLOW_WORKER_CONCURRENCY": "3"})
    spec = compose.process_spec(
        "airflow-worker",
        addresses={
            "postgres:5432/airflow": "127.0.0.1:5432/t_meta",
            "postgres:5432": "127.0.0.1:5432",
            "redis:6379/0": "127.0.0.1:6379/13",
            "airflow-apiserver:8080": "127.0.0.1:40001",
        },
        paths={"/usr/local/airflow": str(tmp_path)},
        base_env={"PATH": "/bin", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"},
        env_overrides={"AIRFLOW__API__WORKERS": "1"},
        extra_args=["--celery-hostname", "w1@%h"],
    )
    assert spec.argv == ["airflow", "celery", "worker", "--celery-hostname", "w1@%h"]
    env = spec.env
    assert env["PATH"] == "/bin"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # the compose file wins over the parent
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/13"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:5432/t_meta")
    assert env["AIRFLOW_CONN_KOMBO_STATE"].endswith("@127.0.0.1:5432/kombo_state")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:40001/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{tmp_path}/dags"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"
    assert env["AIRFLOW__API__WORKERS"] == "1"
    assert env["DUMB_INIT_SETSID"] == "0"
    with pytest.raises(ComposeError, match="no service"):
        compose.process_spec("nope")


def test_environment_list_form_and_string_command(tmp_path):
    path = tmp_path / "compose.yaml"
    path.write_text(
        "services:\n"
        "  app:\n"
        "    image: x\n"
        "    entrypoint: /bin/sh -c\n"
        "    command: ['echo $${HOME} ${GREETING:-hi}']\n"
        "    environment: ['A=1', 'FROM_SHELL', 'FLAG=true']\n"
        "    profiles: [tools]\n"
    )
    compose = ComposeFile(path, {"FROM_SHELL": "shell"})
    assert compose.command("app") == ["/bin/sh", "-c", "echo ${HOME} hi"]
    assert compose.environment("app") == {"A": "1", "FROM_SHELL": "shell", "FLAG": "true"}
    assert compose.profiles("app") == ("tools",)


def test_write_passwords_keeps_other_users(tmp_path, monkeypatch):
    path = tmp_path / "auth" / "passwords.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"viewer": "v"}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "boss:admin,viewer:viewer")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "pw-123")
    bootstrap.write_passwords(path)
    assert json.loads(path.read_text()) == {"viewer": "v", "boss": "pw-123"}
    assert path.stat().st_mode & 0o077 == 0
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "")
    with pytest.raises(ValueError, match="empty"):
        bootstrap.write_passwords(path)


def test_fix_ownership_hands_files_to_airflow_uid(tmp_path):
    (tmp_path / "logs" / "a").mkdir(parents=True)
    (tmp_path / "logs" / "a" / "f.log").write_text("x")
    me = os.getuid()
    assert bootstrap.fix_ownership([tmp_path / "logs"], uid=me) == 0
    if os.geteuid() == 0:
        assert bootstrap.fix_ownership([tmp_path / "logs"], uid=me + 4242) == 3
        assert (tmp_path / "logs" / "a" / "f.log").stat().st_uid == me + 4242


def test_ensure_database_sqlite_and_refusals(tmp_path):
    target = tmp_path / "deep" / "state.db"
    assert bootstrap.ensure_database(f"sqlite:///{target}") is False
    assert target.parent.is_dir()
    with pytest.raises(ValueError, match="refusing"):
        bootstrap.ensure_database('postgresql://u@h:5432/bad"name')
    with pytest.raises(ValueError, match="cannot create"):
        bootstrap.ensure_database("mysql://u@h/x")


def test_cli_init_env(tmp_path, capsys):
    target = tmp_path / ".env"
    assert deploy_main(["init-env", "--example", str(ROOT / ".env.example"), "--output", str(target)]) == 0
    assert "AIRFLOW_JWT_SECRET" in capsys.readouterr().out
    assert deploy_main(["init-env", "--example", str(ROOT / ".env.example"), "--output", str(target)]) == 1
