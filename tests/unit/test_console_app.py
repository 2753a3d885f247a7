"""The console's pure parts: cell formatting, links, CSV, the repairs' confs and the templates' escaping."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from kombo_sync.console.actions import MAX_IDS_PER_RUN, ActionError, discard_conf, replay_conf
from kombo_sync.console.app import _environment, cell_text, safe_url, to_csv
from kombo_sync.console.queries import COLUMNS, mask_emails


def test_cells_are_shown_alike_on_pages_and_in_csv() -> None:
    assert cell_text(None) == "" and cell_text(True) == "yes" and cell_text(3) == "3"
    assert cell_text(datetime(2026, 1, 5, 8, 0, 1, 999, tzinfo=UTC)) == "2026-01-05 08:00:01Z"


def test_only_http_links_are_links() -> None:
    assert safe_url("https://app.kombo.dev/logs/1") == "https://app.kombo.dev/logs/1"
    for bad in ("javascript:alert(1)", " javascript:x", "data:text/html,x", None, ""):
        assert safe_url(bad) is None


def test_csv_has_labels_and_neutralises_spreadsheet_formulas() -> None:
    text = to_csv((("a", "First"), ("b", "Second")), [{"a": "=HYPERLINK(1)", "b": None}, {"a": "ok", "b": 2}])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["First", "Second"], ["'=HYPERLINK(1)", ""], ["ok", "2"]]


def test_emails_in_reasons_are_masked() -> None:
    assert mask_emails("bad value 'a.b+c@x.org' in row 3") == "bad value '[e-mail hidden]' in row 3"


def test_replay_and_discard_confs_are_the_dag_params() -> None:
    assert replay_conf(["o1", " o2 ", "o1", ""]) == {"order_ids": ["o1", "o2"]}
    assert discard_conf(["o1"], ["7"], " gone ") == {
        "discard_order_ids": ["o1"],
        "discard_quarantine_ids": [7],
        "discard_reason": "gone",
    }
    with pytest.raises(ActionError, match="at least one"):
        replay_conf([])
    with pytest.raises(ActionError, match="reason"):
        discard_conf(["o1"], [], "  ")
    with pytest.raises(ActionError, match="numbers"):
        discard_conf([], ["x"], "why")
    with pytest.raises(ActionError, match="at most"):
        replay_conf([f"o{i}" for i in range(MAX_IDS_PER_RUN + 1)])


def test_templates_escape_what_the_state_store_holds() -> None:
    hostile = "<script>alert(1)</script>"
    html = (
        _environment()
        .get_template("dead_letters.html")
        .render(
            pages=(),
            page="dead-letters",
            user_name=hostile,
            csrf_field="csrf_token",
            csrf="abc",
            message=hostile,
            error="",
            integration_id="",
            letter_columns=COLUMNS["dead_letters"],
            letters=[
                {
                    "order_id": hostile,
                    "payload_hash": "h" * 64,
                    "integration_id": "i",
                    "state": "dead",
                    "code": "C",
                    "message": hostile,
                    "log_url": "javascript:alert(1)",
                    "attempts": 1,
                    "first_attempt_at": None,
                    "last_attempt_at": None,
                }
            ],
            quarantine_columns=COLUMNS["quarantine"],
            quarantined=[],
            integrations=["i"],
        )
    )
    assert hostile not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html and "<td>javascript:alert(1)</td>" in html  # text, not a link


def test_every_console_route_requires_an_airflow_login() -> None:
    from fastapi.routing import APIRoute

    from kombo_sync.console.app import create_console_app
    from kombo_sync.console.security import read_access, run_access

    def calls(dependant) -> set:  # type: ignore[no-untyped-def]
        found = {dependant.call}
        for sub in dependant.dependencies:
            found |= calls(sub)
        return found

    routes = [route for route in create_console_app().routes if isinstance(route, APIRoute)]
    assert len(routes) >= 7
    for route in routes:
        needed = run_access if route.methods & {"POST", "PUT", "PATCH", "DELETE"} else read_access
        assert needed in calls(route.dependant), route.path
        if needed is run_access:
            assert route.methods == {"POST"}, route.path
