"""The leak scanner (tests/support/leaks.py) can fail: a canary planted in a log file, an XCom value or a
rendered field is reported with where it was found, and the report never shows the canary in full."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from tests.support.candidate_data import candidate_data_in_files
from tests.support.leaks import (
    Canary,
    files_under,
    leaks_in_files,
    leaks_in_texts,
    mask,
    rendered_field_texts,
    xcom_texts,
)

SECRET = "kombo-api-canary-5f1c2e9d8a7b"
EMAIL = "canary.5f1c@candidates.example"
CANARIES = [Canary("Kombo API key", SECRET), Canary("candidate e-mail", EMAIL)]


def test_a_canary_in_a_log_file_is_found_with_file_and_line_and_masked(tmp_path):
    logs = tmp_path / "logs" / "dag_id=kombo_order_intake" / "run_id=manual"
    logs.mkdir(parents=True)
    (logs / "attempt=1.log").write_text(
        '{"event": "start"}\n{"event": "GET failed", "auth": "Bearer ' + SECRET + '"}\n'
    )
    (tmp_path / "logs" / "clean.log").write_text("nothing here\n")
    (tmp_path / "logs" / "scheduler.out").write_text(f"x\ny\nz {EMAIL.upper()}\n")  # any name, any case
    mailbox = tmp_path / "logs" / "mailbox"
    mailbox.mkdir()
    (mailbox / "1.eml").write_text(EMAIL)
    files = files_under(tmp_path / "logs", exclude=[mailbox])
    assert len(files) == 3

    found = leaks_in_files(files, CANARIES, relative_to=tmp_path)

    assert found == [
        "Kombo API key [komb... (29 chars)] in logs/dag_id=kombo_order_intake/run_id=manual/attempt=1.log (line 2)",
        "candidate e-mail [cana... (30 chars)] in logs/scheduler.out (line 3)",
    ]
    assert not any(SECRET in line or EMAIL in line for line in found)


def test_encoded_forms_are_found_too():
    """A password in a connection URI is percent-encoded; in a JSON log line it may be escaped."""
    secret = Canary("SMTP password", "p@ss/word+canary")
    found = leaks_in_texts(
        [("uri", "postgresql://kombo:p%40ss%2Fword%2Bcanary@db/x"), ("clean", "p@ss word canary")], [secret]
    )
    assert found == ["SMTP password [p@ss... (16 chars)] in uri (line 1)"]


def test_a_canary_in_an_xcom_value_or_rendered_field_is_found_by_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'airflow.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE xcom (dag_id TEXT, run_id TEXT, task_id TEXT, map_index INT, key TEXT, value TEXT)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE rendered_task_instance_fields (dag_id TEXT, run_id TEXT, task_id TEXT, map_index INT,"
            " rendered_fields TEXT, k8s_pod_yaml TEXT)"
        )
        rows = [("kombo_order_intake", "r1", "poll", -1, "return_value", json.dumps({"n": 3})),
                # JSON-encoded: the e-mail's "@" and a unicode escape must not hide it
                ("kombo_order_intake", "r1", "send", 0, "return_value",
                 json.dumps({"failed": [f"{EMAIL} refused"]}, ensure_ascii=True))]  # fmt: skip
        conn.execute(
            sa.text("INSERT INTO xcom VALUES (:d, :r, :t, :m, :k, :v)"),
            [dict(zip("drtmkv", row, strict=True)) for row in rows],
        )
        conn.execute(
            sa.text("INSERT INTO rendered_task_instance_fields VALUES ('d', 'r', 't', -1, :f, NULL)"),
            {"f": json.dumps({"op_kwargs": {"token": SECRET}})},
        )
    engine.dispose()

    found = leaks_in_texts(xcom_texts(url) + rendered_field_texts(url), CANARIES)

    assert found == [
        "candidate e-mail [cana... (30 chars)] in xcom kombo_order_intake/r1/send[0] key=return_value (line 1)",
        "Kombo API key [komb... (29 chars)] in rendered fields d/r/t[-1] (line 1)",
    ]


def test_candidate_data_reports_mask_the_pattern(tmp_path):
    log = tmp_path / "a.log"
    log.write_text(f"sent to {EMAIL}\n")
    found = candidate_data_in_files([log], [re.compile(re.escape(EMAIL))], relative_to=tmp_path)
    assert len(found) == 1 and "a.log" in found[0] and EMAIL.replace(".", r"\.") not in found[0]
    assert mask(EMAIL) == "cana... (30 chars)"
