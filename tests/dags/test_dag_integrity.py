"""DAG integrity: every DAG file imports cleanly and follows the project's conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
EXPECTED_DAGS = {"kombo_package_sync", "kombo_order_intake", "kombo_result_writeback"}


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}, dag_bag.import_errors


def test_expected_dags_present(dag_bag):
    assert EXPECTED_DAGS <= set(dag_bag.dag_ids)


def test_dag_id_equals_file_name(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_conventions(dag_bag, dag_id):
    dag = dag_bag.dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert "kombo" in dag.tags
    assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id} has no doc_md"
    assert dag.owner and dag.owner != "airflow", f"{dag_id} keeps the default owner"
    for task in dag.tasks:
        assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}"
        assert task.retry_delay.total_seconds() > 0
