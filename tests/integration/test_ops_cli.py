"""`python -m kombo_sync.ops` run as a subprocess, as an operator would, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kombo_sync.state.erasures import ErasureLog
from kombo_sync.state.orders import OrderRepository
from kombo_sync.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "Canary.Candidate@candidates.example"
SALT = "cli-test-salt-0123456789"


def ops(state_store: StateStore, *args: str, salt: str | None = SALT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
        "AIRFLOW_CONN_KOMBO_STATE": json.dumps(
            {"conn_type": "generic", "extra": {"sqlalchemy_url": state_store.url}}
        ),
    }
    env.pop("KOMBO_ERASURE_SALT", None)
    if salt is not None:
        env["KOMBO_ERASURE_SALT"] = salt
    return subprocess.run(
        [sys.executable, "-m", "kombo_sync.ops", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def order(order_id: str, email: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "integration_id": "workday:cli",
        "package_id": "p1",
        "status": "OPEN",
        "candidate": {
            "email": email,
            "first_name": "Canaryfirst",
            "last_name": "Canarylast",
            "phone": "+4915550999",
        },
    }


def test_erase_prints_counts_and_erases(state_store: StateStore) -> None:
    repo = OrderRepository(state_store)
    repo.record_order(order("o1", EMAIL), "webhook")
    repo.mark_rejected("o1", "no")
    repo.record_order(order("o2", EMAIL.lower()), "webhook")
    repo.record_order(order("other", "someone@candidates.example"), "webhook")

    dry = ops(state_store, "erase", "--email", EMAIL, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["orders_erased"] == 2
    assert repo.get("o1").candidate_email == EMAIL  # type: ignore[union-attr]

    done = ops(state_store, "erase", "--email", EMAIL, "--reason", "ticket 7")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["orders_erased"], summary["orders_cancelled"], summary["candidates_found"]) == (2, 1, 1)
    for text in (done.stdout, done.stderr, dry.stdout, dry.stderr):
        assert "canary" not in text.lower() and SALT not in text
    assert repo.get("o1").candidate_email is None  # type: ignore[union-attr]
    assert repo.get("o2").state == "cancelled"  # type: ignore[union-attr]
    assert repo.get("other").candidate_email  # type: ignore[union-attr]
    [record] = ErasureLog(state_store).recent()
    assert record.kind == "request" and record.reason == "ticket 7"
    assert (record.requested_by or "").startswith("cli:")

    again = ops(state_store, "erase", "--email", EMAIL)
    assert again.returncode == 0
    assert json.loads(again.stdout)["orders_already_erased"] == 2


def test_bad_input_is_refused_clearly(state_store: StateStore) -> None:
    missing = ops(state_store, "erase")
    assert missing.returncode == 2 and "--email" in missing.stderr
    bad = ops(
        state_store, "erase", "--email", "someone@candidates.example", "--email", "canary.candidates.example"
    )
    assert bad.returncode == 2
    assert "error: not an e-mail address" in bad.stderr and "canary" not in bad.stderr
    assert bad.stdout == ""
    short = ops(state_store, "erase", "--email", EMAIL, salt="tooshort")
    assert short.returncode == 2 and "shorter than" in short.stderr and "tooshort" not in short.stderr


def test_unknown_candidate_and_retention_command(state_store: StateStore) -> None:
    unknown = ops(state_store, "erase", "--email", "nobody@candidates.example")
    assert unknown.returncode == 0
    assert json.loads(unknown.stdout)["candidates_found"] == 0
    assert "no order of this candidate" in unknown.stderr
    retention = ops(state_store, "retention", "--dry-run")
    assert retention.returncode == 0, retention.stderr
    assert json.loads(retention.stdout)["retention"]["orders_erased"] == 0
