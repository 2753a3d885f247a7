"""DAG integrity: every DAG file imports cleanly and follows the project's conventions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
EXPECTED_DAGS = {
    "kombo_package_sync",
    "kombo_order_intake",
    "kombo_result_writeback",
    "kombo_reconcile",
    "kombo_housekeeping",
    "kombo_lifecycle",
}


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


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_params_with_defaults_are_optional_in_the_trigger_form(dag_bag, dag_id):
    """Airflow's trigger form marks a param required unless its schema type admits null."""
    for name, param in dag_bag.dags[dag_id].params.items():
        types = param.schema.get("type")
        types = types if isinstance(types, list) else [types]
        assert "null" in types, f"{dag_id}: param {name!r} has a default but the form shows it as required"
        param.resolve(None)  # an emptied field is accepted, and the task reads it as the default


def test_a_deliberate_failure_is_final_and_names_the_step():
    """The report step fails the run without a retry (retries would hold the next runs back behind
    max_active_runs=1), and its message names the step that failed and what to do."""
    from airflow.sdk.exceptions import AirflowFailException

    from kombo_sync.intake.tasks import report_task

    cases = [
        (None, {"invited": 1}, "poll: the task failed"),
        ({"integrations_failed": {"int-1": "HTTP 503"}}, {"invited": 0}, "poll: 1 integration(s) could not"),
        ({"integrations_failed": {}}, None, "dispatch: the task failed"),
    ]
    for poll, dispatch, message in cases:
        with pytest.raises(AirflowFailException, match=re.escape(message)) as failure:
            report_task(poll, dispatch)
        assert "next" in str(failure.value)
    report = report_task({"integrations_failed": {}, "orders_seen": 2}, {"invited": 2, "duplicate": 1})
    assert report.pop("alerts") == {"enabled": False, "kinds": {}}  # no alert channel in the default settings
    assert report == {
        "orders_seen": 2,
        "orders_new": 0,
        "invited": 2,
        "duplicate": 1,
        "rejected": 0,
        "cancelled": 0,
        "failed": 0,
        "retry_later": 0,
    }


def test_catalog_tasks_hand_each_shard_its_own_xcom_and_fail_finally(monkeypatch):
    """The catalog's entry points (`catalog.tasks`): the plan pushes the summary and each shard under its own
    key and returns what `publish` is mapped over; a publish reads only its shard and labels the mapped task;
    `finish` without a plan fails without a retry."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from kombo_sync.catalog import tasks

    pushed: dict[str, object] = {}
    ti = SimpleNamespace(
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
        xcom_pull=lambda task_ids, key: pushed.get(key) if task_ids == "plan" else None,
    )
    shards = [{"index": 0, "label": "int-a", "items": ["a"]}, {"index": 1, "label": "int-b", "items": ["b"]}]
    seen: list[object] = []
    planned_shards = shards
    monkeypatch.setattr(
        tasks,
        "run_plan",
        lambda params, run_id, settings: (
            seen.append((params, run_id)) or {"summary": {"audit_id": 7}, "shards": planned_shards}
        ),
    )
    monkeypatch.setattr(tasks, "run_publish", lambda shard, settings=None: {"published": shard["items"]})

    mapped = tasks.plan_task({"ti": ti, "run_id": "manual__1", "params": {"force": True}})
    assert mapped == [{"index": 0, "label": "int-a"}, {"index": 1, "label": "int-b"}]
    assert seen == [({"force": True}, "manual__1")]
    assert pushed == {"summary": {"audit_id": 7}, "shard_0": shards[0], "shard_1": shards[1]}

    context: dict[str, object] = {"ti": ti}
    assert tasks.publish_task(mapped[1], context) == {"published": ["b"]}
    assert context["shard_label"] == "int-b"

    empty = SimpleNamespace(xcom_pull=lambda task_ids, key: None)
    with pytest.raises(AirflowFailException, match="the plan task did not finish"):
        tasks.finish_task([], {"ti": empty})


def test_catalog_plan_publishes_a_one_shard_run_itself(monkeypatch):
    """One shard: the plan publishes it, maps no publish task, and `finish` merges its result; with
    `catalog.publish_in_plan` off, the shard goes to a publish task as before."""
    from types import SimpleNamespace

    from kombo_sync.catalog import tasks
    from kombo_sync.settings import PipelineSettings

    pushed: dict[str, object] = {}
    ti = SimpleNamespace(
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
        xcom_pull=lambda task_ids, key: pushed.get(key) if task_ids == "plan" else None,
    )
    shard = {"index": 0, "label": "int-a", "items": ["a"]}
    settings = PipelineSettings()
    monkeypatch.setattr("kombo_sync.settings.load_settings", lambda: settings)
    monkeypatch.setattr(
        tasks, "run_plan", lambda params, run_id, settings: {"summary": {"audit_id": 7}, "shards": [shard]}
    )
    published: list[object] = []
    monkeypatch.setattr(
        tasks, "run_publish", lambda shard, settings=None: published.append(shard) or {"index": 0, "n": 1}
    )
    finished: list[object] = []
    monkeypatch.setattr(tasks, "run_finish", lambda summary, results: finished.append(results) or {})
    monkeypatch.setattr("kombo_sync.alerts.check.run_alert_checks", lambda: None)

    assert tasks.plan_task({"ti": ti, "run_id": "manual__1", "params": {}}) == []
    assert published == [shard]
    assert "shard_0" not in pushed
    tasks.finish_task(None, {"ti": ti})  # publish mapped over nothing: Airflow passes no results
    assert finished == [[{"index": 0, "n": 1}]]

    pushed.clear()
    published.clear()
    settings = PipelineSettings.model_validate({"catalog": {"publish_in_plan": False}})
    assert tasks.plan_task({"ti": ti, "run_id": "manual__2", "params": {}}) == [
        {"index": 0, "label": "int-a"}
    ]
    assert published == [] and pushed["shard_0"] == shard


def test_catalog_publish_parallelism_matches_the_planner(dag_bag):
    from kombo_sync.catalog.plan import PARALLEL_SHARDS

    publish = dag_bag.dags["kombo_package_sync"].get_task("publish")
    assert publish.max_active_tis_per_dagrun == PARALLEL_SHARDS
