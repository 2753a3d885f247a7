"""The Astronomer packaging: the image the compose file builds, and Astro's own DAG integrity test."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_is_the_astro_runtime_of_airflow_3_3():
    from importlib.metadata import version

    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    match = re.match(r"FROM\s+\S*astro\S*/runtime:(\d+)\.(\d+)-\d+", lines[0])
    assert match, f"not an Astro Runtime base image: {lines[0]}"
    major, minor = version("apache-airflow").split(".")[:2]
    assert (match.group(1), match.group(2)) == (major, minor), "the image and the tested Airflow differ"
    assert any("PYTHONPATH" in line and "/usr/local/airflow/include" in line for line in lines)


def test_requirements_cover_what_the_deployment_runs():
    names = {
        re.split(r"[<>=\[ ]", line.strip(), maxsplit=1)[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (
        "apache-airflow-providers-celery",
        "apache-airflow-providers-postgres",
        "redis",
        "psycopg2-binary",
    ):
        assert needed in names
    assert "apache-airflow" not in names, "the Astro Runtime pins Airflow itself"
    assert (ROOT / "packages.txt").exists()
    config = yaml.safe_load((ROOT / ".astro" / "config.yaml").read_text())
    assert config["project"]["name"]


def test_astro_dag_integrity_test_passes_here():
    spec = importlib.util.spec_from_file_location(
        "astro_dag_integrity", ROOT / ".astro" / "test_dag_integrity_default.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = dict(module.get_import_errors())
    expected = {
        "kombo_package_sync.py",
        "kombo_order_intake.py",
        "kombo_result_writeback.py",
        "kombo_reconcile.py",
        "kombo_housekeeping.py",
        "kombo_lifecycle.py",
    }
    found = {Path(path).name for path in results}
    assert expected <= found, f"Astro's test did not see {expected - found}"
    failures = {path: error for path, error in results.items() if error != "No import errors"}
    assert not failures, failures
