"""`python -m kombo_sync.ops status|dead-letters|order|replay|discard` over the console's seeded state store on
SQLite and PostgreSQL: most checks call the command's `main()` in-process (stdout and stderr captured, exit code
returned; a subprocess costs seconds of imports each), the operator's path runs as a subprocess once per command
family; replay and discard create real `kombo_result_writeback` runs in Airflow's metadata DB."""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from kombo_sync.console.queries import COLUMNS, ConsoleQueries
from kombo_sync.state.store import StateStore
from tests.airflow_support import ROOT, ensure_airflow_db
from tests.integration.test_ops_cli import ops
from tests.support.console import (
    CANDIDATE_EMAIL,
    DISABLED,
    HEALTHY,
    LOG_URL,
    UNHEALTHY,
    SeededConsole,
    seed_console_state,
)

WRITEBACK = "kombo_result_writeback"


@pytest.fixture
def seeded(state_store: StateStore) -> Iterator[tuple[StateStore, SeededConsole]]:
    """The console's example state written at the real time (the subprocess's clock), on the test's database."""
    store = StateStore(state_store.url)
    yield store, seed_console_state(store, datetime.now(UTC))
    store.dispose()


class Cli(Protocol):
    def __call__(self, store: StateStore, *args: str) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`python -m kombo_sync.ops ARGS` in this process, with the same connection the subprocess gets."""
    from kombo_sync.ops.__main__ import main

    def call(store: StateStore, *args: str) -> subprocess.CompletedProcess[str]:
        state = {"conn_type": "generic", "extra": {"sqlalchemy_url": store.url}}
        monkeypatch.setenv("AIRFLOW_CONN_KOMBO_STATE", json.dumps(state))
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return call


def run_ops(store: StateStore, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a subprocess (with `env` on top of the test's environment)."""
    if not env:
        return ops(store, *args)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return ops(store, *args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of an aligned table (the first line is the header), cut at the header labels' positions."""
    header, *lines = text.splitlines()
    labels = [label for label in header.split("  ") if label.strip()]
    starts = []
    for label in labels:
        starts.append(header.index(label.strip(), starts[-1] + 1 if starts else 0))
    rows = []
    for line in lines:
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip([label.strip() for label in labels], cells, strict=True)))
    return rows


def refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    """Exit 2, one line on stderr saying `words`, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "usage:"))]
    assert errors and words in result.stderr, result.stderr
    assert result.stdout == ""


# Status --------------------------------------------------------------------------------------------------------


def test_status_in_every_format_shows_the_seeded_numbers(
    seeded: tuple[StateStore, SeededConsole], cli: Cli
) -> None:
    store, _ = seeded
    as_json = cli(store, "status", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    rows = {row["integration_id"]: row for row in found["integrations"]}
    assert [row["integration_id"] for row in found["integrations"]] == [DISABLED, UNHEALTHY, HEALTHY]
    assert found["needs_attention"] == 2
    troubled, healthy = rows[UNHEALTHY], rows[HEALTHY]
    assert (troubled["dead_letters"], troubled["quarantined"], troubled["week_failed"]) == (2, 1, 1)
    assert troubled["last_error"].startswith("result: INTEGRATION.INACTIVE")
    assert troubled["last_error_log_url"] == LOG_URL and troubled["health"] == "unhealthy"
    assert (healthy["week_received"], healthy["week_invited"], healthy["results_written_7d"]) == (2, 1, 1)
    assert healthy["health"] == "ok" and healthy["last_poll_at"].endswith("Z")
    # The same rows as the console's own query, times as UTC ISO text.
    console = {row["integration_id"]: row for row in ConsoleQueries(store).overview()}
    assert set(console) == set(rows)
    for key in ("health", "problems", "customer", "tool", "status", "week_received", "dead_letters"):
        assert {name: row[key] for name, row in rows.items()} == {
            name: row[key] for name, row in console.items()
        }

    as_csv = cli(store, "status", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    reader = csv.reader(io.StringIO(as_csv.stdout))
    assert next(reader) == [label for _key, label in COLUMNS["overview"]]  # the console's CSV columns
    by_id = {row["Integration"]: row for row in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert (by_id[UNHEALTHY]["Dead letters"], by_id[UNHEALTHY]["Quarantined"]) == ("2", "1")
    assert (by_id[HEALTHY]["7 d received"], by_id[HEALTHY]["Health"]) == ("2", "ok")

    as_table = run_ops(store, "status")  # the operator's path: a process of its own
    assert as_table.returncode == 0, as_table.stderr
    lines = as_table.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    table = parse_table("\n".join(lines[: lines.index("") - 1]))
    assert [row["Integration"] for row in table] == [DISABLED, UNHEALTHY, HEALTHY]
    shown = {row["Integration"]: row for row in table}
    assert (shown[UNHEALTHY]["Dead"], shown[UNHEALTHY]["Quar."], shown[UNHEALTHY]["Health"]) == (
        "2",
        "1",
        "unhealthy",
    )
    assert shown[UNHEALTHY]["7 days"] == "0/0/0/1/1" and shown[HEALTHY]["7 days"] == "2/1/0/0/0"
    assert shown[DISABLED]["Status"] == "disabled"
    assert shown[HEALTHY]["Last poll"].startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert f"  Kombo log: {LOG_URL}" in lines
    assert f"{UNHEALTHY}: 2 dead letter(s); 1 failed invitation(s); 1 quarantined row(s)" in lines
    assert lines[-1] == "3 integration(s), 2 needing attention"


def test_status_filters_and_the_check_exit_code(seeded: tuple[StateStore, SeededConsole], cli: Cli) -> None:
    store, _ = seeded
    check = cli(store, "status", "--check", "--format", "json")
    assert check.returncode == 1 and json.loads(check.stdout)["needs_attention"] == 2
    fine = cli(store, "status", "--check", "--integration", HEALTHY, "--format", "json")
    assert fine.returncode == 0, fine.stderr
    assert [row["integration_id"] for row in json.loads(fine.stdout)["integrations"]] == [HEALTHY]
    two = cli(store, "status", "--integration", HEALTHY, "--integration", UNHEALTHY, "--format", "csv")
    assert [row["Integration"] for row in csv.DictReader(io.StringIO(two.stdout))] == [UNHEALTHY, HEALTHY]
    unhealthy = cli(store, "status", "--unhealthy", "--format", "json")
    assert [row["integration_id"] for row in json.loads(unhealthy.stdout)["integrations"]] == [
        DISABLED,
        UNHEALTHY,
    ]

    refused(cli(store, "status", "--integration", "workday:nope"), "no integration workday:nope")
    refused(cli(store, "status", "--format", "xml"), "invalid choice: 'xml'")


# Dead letters ---------------------------------------------------------------------------------------------------


def test_dead_letters_and_quarantine_in_every_format(
    seeded: tuple[StateStore, SeededConsole], cli: Cli
) -> None:
    store, state = seeded
    as_json = cli(store, "dead-letters", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert sorted(letter["order_id"] for letter in found["dead_letters"]) == sorted(state.dead_orders)
    assert {letter["log_url"] for letter in found["dead_letters"]} == {LOG_URL}
    [row] = found["quarantine"]
    assert row["id"] == state.quarantine_id and "[e-mail hidden]" in row["reason"]
    assert CANDIDATE_EMAIL not in as_json.stdout + as_json.stderr

    other = json.loads(cli(store, "dead-letters", "--integration", HEALTHY, "--format", "json").stdout)
    assert other == {"dead_letters": [], "quarantine": []}

    letters_csv = cli(store, "dead-letters", "--only", "dead-letters", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(letters_csv.stdout)))
    assert list(rows[0]) == [label for _key, label in COLUMNS["dead_letters"]]
    assert sorted(row["Order"] for row in rows) == sorted(state.dead_orders)
    assert {row["Code"] for row in rows} == {"INTEGRATION.INACTIVE"}
    jailed_csv = cli(store, "dead-letters", "--only", "quarantine", "--format", "csv")
    assert [row["Id"] for row in csv.DictReader(io.StringIO(jailed_csv.stdout))] == [str(state.quarantine_id)]

    as_table = cli(store, "dead-letters")
    lines = as_table.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines)
    assert lines[0] == "Dead letters: 2"
    letters = parse_table("\n".join(lines[1 : 3 + 1]))
    assert sorted(row["Order"] for row in letters) == sorted(state.dead_orders)
    assert {(row["Integration"], row["State"], row["Tries"]) for row in letters} == {(UNHEALTHY, "dead", "1")}
    start = lines.index("Open quarantined rows: 1")
    [jailed] = parse_table("\n".join(lines[start + 1 : start + 3]))
    assert (jailed["Id"], jailed["Key"], jailed["Job"]) == (
        str(state.quarantine_id),
        state.failed_order,
        "writeback",
    )

    refused(cli(store, "dead-letters", "--format", "csv"), "--only dead-letters or --only quarantine")


# Order lookup ---------------------------------------------------------------------------------------------------


def test_order_lookup_hides_the_candidate_unless_asked(
    seeded: tuple[StateStore, SeededConsole], cli: Cli
) -> None:
    store, state = seeded
    for term in (state.invited_order, state.invitation_id, state.application_id):
        result = cli(store, "order", term, "--format", "json")
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        assert [item["id"] for item in found["orders"]] == [state.invited_order], term
        assert [item["external_id"] for item in found["invitations"]] == [state.invitation_id]
        assert [event["response_status"] for event in found["webhook_events"]] == [200]
        assert [version["state"] for version in found["result_versions"]] == ["sent"]
        assert "candidate_email" not in found["orders"][0]
        assert CANDIDATE_EMAIL not in result.stdout + result.stderr and "Lovelace" not in result.stdout

    dead = json.loads(cli(store, "order", state.dead_orders[0], "--format", "json").stdout)
    assert dead["result_versions"][0]["code"] == "INTEGRATION.INACTIVE"
    assert dead["result_versions"][0]["log_url"] == LOG_URL

    table = cli(store, "order", state.invitation_id)
    assert table.returncode == 0 and all(len(line) <= 120 for line in table.stdout.splitlines())
    assert f"Order {state.invited_order}" in table.stdout and "Result versions: 1" in table.stdout
    assert "Invitations: 1" in table.stdout and "Webhook events: 1" in table.stdout
    assert CANDIDATE_EMAIL not in table.stdout and "Candidate" not in table.stdout

    shown = run_ops(store, "order", state.invited_order, "--show-candidate")  # its own stderr, its logs
    assert shown.returncode == 0
    assert CANDIDATE_EMAIL in shown.stdout and "Ada Lovelace" in shown.stdout
    assert CANDIDATE_EMAIL not in shown.stderr and "Lovelace" not in shown.stderr
    shown_csv = cli(store, "order", state.invited_order, "--show-candidate", "--format", "csv")
    [row] = csv.DictReader(io.StringIO(shown_csv.stdout))
    assert row["Candidate e-mail"] == CANDIDATE_EMAIL and row["Order"] == state.invited_order

    missing = cli(store, "order", "no-such-order")
    assert missing.returncode == 1 and "nothing matches" in missing.stdout


# Replay and discard: input checks (no run is created) ------------------------------------------------------------


def test_replay_and_discard_refuse_bad_input_and_dry_runs_start_nothing(
    seeded: tuple[StateStore, SeededConsole], cli: Cli
) -> None:
    store, state = seeded
    refused(cli(store, "replay"), "name ORDER_IDs")
    refused(
        cli(store, "replay", "ord-typo-1", state.dead_orders[0]), "no order ord-typo-1 in the state store"
    )
    refused(cli(store, "replay", "--all"), "--integration ID and --all")
    refused(
        cli(store, "replay", "--integration", HEALTHY, "--all"),
        f"integration {HEALTHY} has no dead letters",
    )
    refused(cli(store, "replay", "--quarantine-id", "x1"), "quarantine ids are numbers")
    refused(cli(store, "replay", "--quarantine-id", "999"), "no open quarantined row 999")
    refused(cli(store, "discard", state.dead_orders[0]), "--reason")
    refused(cli(store, "discard", state.dead_orders[0], "--reason", "  "), "needs a reason")
    refused(cli(store, "discard", state.invited_order, "--reason", "x"), "has no dead letter to discard")
    refused(cli(store, "discard", "--reason", "why"), "name the ORDER_IDs")
    too_many = cli(store, "replay", *[state.dead_orders[0]] * 2, *[f"o{index}" for index in range(1001)])
    refused(too_many, "at most 1000 items per run")

    dry = cli(store, "replay", "--integration", UNHEALTHY, "--all", "--dry-run", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["run_id"] is None and plan["dry_run"] is True
    assert sorted(plan["conf"]["order_ids"]) == sorted(state.dead_orders)
    assert all(item["dead_letter"] for item in plan["items"])
    dry_table = cli(store, "discard", state.dead_orders[0], "--quarantine-id", str(state.quarantine_id),
                        "--reason", "candidate withdrew", "--dry-run")  # fmt: skip
    assert dry_table.returncode == 0, dry_table.stderr
    assert dry_table.stdout.startswith(
        f"Dry run: a {WRITEBACK} run would get 2 item(s); nothing was started."
    )
    assert '"discard_quarantine_ids": [' in dry_table.stdout


# Replay and discard: real runs in Airflow's metadata DB -----------------------------------------------------------


def _serialize_writeback_dag() -> None:
    """Put the write-back DAG in the test session's metadata DB, as the dag-processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    bundle = next(bundle for bundle in manager.get_all_dag_bundles() if bundle.name == "dags-folder")
    bag = BundleDagBag(
        dag_folder=str(ROOT / "dags" / f"{WRITEBACK}.py"), bundle_path=bundle.path, bundle_name=bundle.name
    )
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, bundle.name, bundle.version)


@contextmanager
def _metadata_session() -> Iterator[Any]:
    """A session on Airflow's metadata DB over a new connection: the runs the subprocesses just committed are
    seen (a pooled SQLite connection of this process may still read an older snapshot)."""
    import sqlalchemy as sa
    from airflow.configuration import conf
    from sqlalchemy.orm import Session

    engine = sa.create_engine(conf.get("database", "sql_alchemy_conn"), poolclass=sa.pool.NullPool)
    try:
        with Session(engine) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _run(run_id: str) -> dict[str, Any]:
    from airflow.models.dagrun import DagRun

    with _metadata_session() as session:
        found = session.query(DagRun).filter(DagRun.dag_id == WRITEBACK, DagRun.run_id == run_id).one()
        return {
            "conf": found.conf,
            "state": getattr(found.state, "value", found.state),
            "run_type": getattr(found.run_type, "value", found.run_type),
            "triggered_by": getattr(found.triggered_by, "value", found.triggered_by),
            "triggering_user_name": found.triggering_user_name,
            "note": found.note,
        }


def _runs() -> list[str]:
    from airflow.models.dagrun import DagRun

    with _metadata_session() as session:
        return [str(value) for (value,) in session.query(DagRun.run_id).filter(DagRun.dag_id == WRITEBACK)]


def _mark_stale(stale: bool) -> None:
    import sqlalchemy as sa

    with _metadata_session() as session:
        session.execute(
            sa.text("UPDATE dag SET is_stale = :stale WHERE dag_id = :dag_id"),
            {"stale": stale, "dag_id": WRITEBACK},
        )


def _delete_runs(run_ids: list[str]) -> None:
    from airflow.models.dagrun import DagRun

    with _metadata_session() as session:
        for found in session.query(DagRun).filter(DagRun.dag_id == WRITEBACK, DagRun.run_id.in_(run_ids)):
            session.delete(found)


@pytest.mark.airflow
@pytest.mark.slow
def test_replay_and_discard_create_writeback_runs(
    seeded: tuple[StateStore, SeededConsole], tmp_path: Path
) -> None:
    store, state = seeded
    ensure_airflow_db()
    _serialize_writeback_dag()
    login = getpass.getuser()
    created: list[str] = []
    try:
        replay = run_ops(store, "replay", "--integration", UNHEALTHY, "--all", "--format", "json")
        assert replay.returncode == 0, replay.stderr
        run_id = json.loads(replay.stdout)["run_id"]
        created.append(run_id)
        run = _run(run_id)
        assert sorted(run["conf"]["order_ids"]) == sorted(state.dead_orders)
        assert (run["state"], run["run_type"], run["triggered_by"]) == ("queued", "manual", "cli")
        assert run["triggering_user_name"] == login
        assert run["note"] == f"Replay from the command line (python -m kombo_sync.ops) by {login}"

        jailed = run_ops(store, "replay", "--quarantine-id", str(state.quarantine_id))
        assert jailed.returncode == 0, jailed.stderr
        first = jailed.stdout.splitlines()[0]
        assert first.startswith(f"Replay of 1 order(s) queued as {WRITEBACK} run ")
        created.append(first.rsplit(" ", 1)[1])
        assert created[-1] in _runs()
        assert _run(created[-1])["conf"] == {"order_ids": [state.failed_order]}  # its order is read again
        assert f"airflow tasks states-for-dag-run {WRITEBACK} {created[-1]}" in jailed.stdout

        discard = run_ops(store, "discard", state.dead_orders[0], "--quarantine-id", str(state.quarantine_id),
                          "--reason", "candidate withdrew", "--format", "json")  # fmt: skip
        assert discard.returncode == 0, discard.stderr
        created.append(json.loads(discard.stdout)["run_id"])
        run = _run(created[-1])
        assert run["conf"] == {
            "discard_order_ids": [state.dead_orders[0]],
            "discard_quarantine_ids": [state.quarantine_id],
            "discard_reason": "candidate withdrew",
        }
        assert run["note"].startswith("Discard from the command line") and run["state"] == "queued"
        for result in (replay, jailed, discard):
            assert "candidate withdrew" not in result.stderr and CANDIDATE_EMAIL not in result.stderr

        # The DAG unknown to Airflow (its file gone: stale) and Airflow's DB unreachable: one line, exit 2.
        # (Marked stale in the session's own metadata DB for the call, then restored: a copy of the live SQLite
        # file taken while this process holds it open left the original malformed for later tests.)
        _mark_stale(True)
        try:
            gone = run_ops(store, "replay", state.dead_orders[0])
        finally:
            _mark_stale(False)
        refused(gone, f"the DAG {WRITEBACK} is not in Airflow's metadata database")
        down = run_ops(store, "replay", state.dead_orders[0],
                       AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg://postgres@127.0.0.1:9/airflow")  # fmt: skip
        refused(down, "Airflow's metadata database is not reachable")
        assert "postgres@" not in down.stderr
    finally:
        _delete_runs(created)
