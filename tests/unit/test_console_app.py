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


class _FakeUser:
    def get_name(self) -> str:
        return "viewer"


class _FakeQueries:
    """Fixed answers in the shapes of `ConsoleQueries`, so the pages render without a database."""

    def funnel(self, period: str):  # type: ignore[no-untyped-def]
        from kombo_sync.console.queries import COLUMNS, Funnel

        now = datetime(2026, 1, 5, 12, tzinfo=UTC)
        found = Funnel(period, "Last 7 days", now.replace(day=1), now, "day")
        for day, received in ((4, 10), (5, 6)):
            row = {key: 0 for key, _label in COLUMNS["funnel"]}
            row.update(bucket=f"2026-01-0{day}", received=received, invited=received - 1, webhooks_422=1)
            found.buckets.append(row)
        found.totals = {"received": 16, "invited": 14, "finished": 9, "written_back": 8}
        found.invite_latency, found.writeback_lag = [3, 9, 2, 0, 0], [0, 1, 7, 0, 0]
        found.webhook_statuses = {200: 12, 422: 2}
        return found

    def run_history(self, job: str | None = None):  # type: ignore[no-untyped-def]
        return [{"job": "intake", "run_id": "<b>r1</b>", "status": "success", "started_at": None,
                 "finished_at": None, "duration_s": 1.5, "summary": "orders=3"}]  # fmt: skip

    def run_jobs(self) -> list[str]:
        return ["intake"]

    def erasures(self):  # type: ignore[no-untyped-def]
        return [{"erased_at": None, "kind": "retention", "reason": "=cmd", "requested_by": None, "run_id": None,
                 "integration_id": None, "order_count": 4, "counts": "orders_erased=4"}]  # fmt: skip


@pytest.fixture
def console_client(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from kombo_sync.console import app as console_app
    from kombo_sync.console.security import read_access

    monkeypatch.setattr(console_app, "csrf_token", lambda request: "token")
    monkeypatch.setattr(console_app, "can_see_candidates", lambda request, user: False)
    app = console_app.create_console_app(_FakeQueries)
    app.dependency_overrides[read_access] = _FakeUser
    with TestClient(app) as client:
        yield client


def test_funnel_page_draws_its_charts_as_inline_svg(console_client) -> None:  # type: ignore[no-untyped-def]
    page = console_client.get("/funnel?period=7d")
    assert page.status_code == 200
    html = page.text
    assert (
        html.count("<svg") == 7
        and "<script src" not in html
        and "http://" not in html.replace('xmlns="http://', "")
    )
    assert '<div class="big" id="total-received">16</div>' in html and "Written back: 8" in html
    assert "01-04" in html and "422 rejected" in html  # axis labels and the legend
    assert console_client.get("/funnel?period=year").status_code == 400
    rows = list(csv.reader(io.StringIO(console_client.get("/export/funnel.csv?period=7d").text)))
    assert rows[0][:3] == ["Period", "Received", "Invited"] and rows[1][:3] == ["2026-01-04", "10", "9"]


def test_run_history_and_erasures_pages_and_csv(console_client) -> None:  # type: ignore[no-untyped-def]
    runs = console_client.get("/runs")
    assert runs.status_code == 200 and "&lt;b&gt;r1&lt;/b&gt;" in runs.text and "orders=3" in runs.text
    assert console_client.get("/erasures").status_code == 200
    rows = list(csv.reader(io.StringIO(console_client.get("/export/erasures.csv").text)))
    assert rows[0][0] == "Erased at" and rows[1][2] == "'=cmd" and rows[1][6] == "4"
    assert list(csv.reader(io.StringIO(console_client.get("/export/runs.csv").text)))[1][0] == "intake"


def test_charts_escape_their_labels() -> None:
    from kombo_sync.console.charts import Series, column_chart, funnel_bars

    svg = str(column_chart(["<x>"], [Series("<s>", [1.0])], title="<t>")) + str(
        funnel_bars([("<a>", 3), ("b", 1)], title="f")
    )
    assert "<x>" not in svg and "<s>" not in svg and "<a>" not in svg and "&lt;x&gt;" in svg
    assert "33%" in svg  # the second step as a share of the first
