"""The Kombo console served by a live `airflow api-server` with the SimpleAuthManager and three users (viewer,
user, admin), over a seeded state store: who gets what, what each page shows, the CSV exports, repairs that
become write-back DAG runs in Airflow's run history, and the overview in a real (headless) browser.

One api-server per module (about 15-25 s to start, after a `dags reserialize` so the write-back DAG exists in
its metadata DB).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kombo_sync.state.store import StateStore
from tests.support.browser import HeadlessChromium, chromium_path
from tests.support.console import CANDIDATE_EMAIL, DISABLED, HEALTHY, LOG_URL, UNHEALTHY, seed_console_state
from tests.support.webhooks import LiveAirflow

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

PASSWORDS = {"admin": "admin-pw-1", "viewer": "viewer-pw-1", "editor": "editor-pw-1"}
CONSOLE = "/kombo-console"
WRITEBACK = "kombo_result_writeback"
PAGES = ("/", "/dead-letters", "/orders?q=ord-invited-1", "/webhooks", "/export/overview.csv", "/funnel?period=7d",
         "/runs", "/erasures", "/export/funnel.csv", "/export/runs.csv", "/export/erasures.csv")  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("console-state") / "state.db"
    store = StateStore(f"sqlite:///{path}")
    result = seed_console_state(store, datetime.now(UTC))
    store.dispose()
    return path, result


@pytest.fixture(scope="module")
def live(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    state_path, _ = seeded
    home = tmp_path_factory.mktemp("console-airflow")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,editor:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__DAGS_FOLDER": os.environ["AIRFLOW__CORE__DAGS_FOLDER"],
        "AIRFLOW_CONN_KOMBO_STATE": json.dumps({"conn_type": "sqlite", "host": str(state_path)}),
        "KOMBO_WEBHOOK_SECRET": "console-test-webhook-secret",
        "KOMBO_WEBHOOK_SECRETS": "",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    server = LiveAirflow(home, env=env, log_dir=home / "logs", migrate=False)
    server.airflow("db", "migrate", timeout=300)
    server.airflow("dags", "reserialize", timeout=300)
    server.start(timeout=180)
    yield server
    server.stop()


def token(live: LiveAirflow, user: str) -> str:
    response = httpx.post(
        f"{live.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30.0
    )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def tokens(live: LiveAirflow) -> dict[str, str]:
    return {user: token(live, user) for user in PASSWORDS}


def client(live: LiveAirflow, bearer: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(
        base_url=f"{live.url}{CONSOLE}", headers=headers, timeout=30.0, follow_redirects=False
    )


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "the page has no action form"
    return match.group(1)


def writeback_runs(live: LiveAirflow, admin: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{live.url}/api/v2/dags/{WRITEBACK}/dagRuns",
        headers={"Authorization": f"Bearer {admin}"},
        params={"order_by": "-run_after"},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["dag_runs"])


# Security ---------------------------------------------------------------------------------------------------


def test_anonymous_requests_get_401_and_no_data(live: LiveAirflow) -> None:
    with client(live) as http:
        for path in PAGES:
            response = http.get(path)
            assert response.status_code == 401, (path, response.status_code)
            assert UNHEALTHY not in response.text and "ord-" not in response.text
        response = http.post("/actions/replay", data={"order_id": "ord-dead-1"})
        assert response.status_code == 401
    with client(live, "not-a-jwt") as http:
        response = http.get("/")
        assert response.status_code == 403 and UNHEALTHY not in response.text


def test_the_webhook_stays_open_and_answers_with_its_own_signature_check(live: LiveAirflow) -> None:
    response = httpx.post(
        live.webhook_url, content=b"{}", headers={"Content-Type": "application/json"}, timeout=30.0
    )
    assert response.status_code == 401 and response.json()["error"] == "SIGNATURE_INVALID"


def test_a_viewer_reads_but_cannot_replay_or_discard(live: LiveAirflow, tokens: dict[str, str]) -> None:
    before = len(writeback_runs(live, tokens["admin"]))
    with client(live, tokens["viewer"]) as http:
        page = http.get("/dead-letters")
        assert page.status_code == 200
        form = {"csrf_token": csrf_of(page.text), "order_id": "ord-dead-1", "reason": "test"}
        assert http.post("/actions/replay", data=form).status_code == 403
        assert http.post("/actions/discard", data=form).status_code == 403
    assert len(writeback_runs(live, tokens["admin"])) == before


def test_actions_refuse_cross_site_requests(live: LiveAirflow, tokens: dict[str, str]) -> None:
    before = len(writeback_runs(live, tokens["admin"]))
    with client(live, tokens["admin"]) as http:
        csrf = csrf_of(http.get("/dead-letters").text)
        assert http.post("/actions/replay", data={"order_id": "ord-dead-1"}).status_code == 403  # no token
        forged = http.post("/actions/replay", data={"order_id": "ord-dead-1", "csrf_token": "0" * 64})
        assert forged.status_code == 403
        cross = http.post(
            "/actions/replay",
            data={"order_id": "ord-dead-1", "csrf_token": csrf},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert http.get("/actions/replay").status_code == 405  # POST only
    assert len(writeback_runs(live, tokens["admin"])) == before


def test_an_admin_replays_and_discards_through_writeback_runs(
    live: LiveAirflow, tokens: dict[str, str], seeded: Any
) -> None:
    _, state = seeded
    with client(live, tokens["admin"]) as http:
        csrf = csrf_of(http.get("/dead-letters").text)
        replay = http.post("/actions/replay", data={"csrf_token": csrf, "all_for_integration": UNHEALTHY})
        assert replay.status_code == 303
        location = replay.headers["location"]
        assert location.startswith("dead-letters?") and "queued+as+run" in location  # relative redirect
        discard = http.post(
            "/actions/discard",
            data={
                "csrf_token": csrf,
                "order_id": state.dead_orders[0],
                "quarantine_id": str(state.quarantine_id),
                "reason": "candidate withdrew",
            },
        )
        assert discard.status_code == 303 and "queued+as+run" in discard.headers["location"]
        one = http.post("/actions/replay", data={"csrf_token": csrf, "order_id": state.dead_orders[1]})
        jailed = http.post(
            "/actions/replay", data={"csrf_token": csrf, "quarantine_id": str(state.quarantine_id)}
        )
        assert one.status_code == jailed.status_code == 303
        no_reason = http.post("/actions/discard", data={"csrf_token": csrf, "order_id": state.dead_orders[0]})
        assert no_reason.status_code == 303 and "error=" in no_reason.headers["location"]
        shown = http.get(no_reason.headers["location"])
        assert "needs a reason" in shown.text

    runs = writeback_runs(live, tokens["admin"])
    confs = {json.dumps(run["conf"], sort_keys=True): run for run in runs}
    replays = [sorted(run["conf"]["order_ids"]) for run in runs if run["conf"].get("order_ids")]
    # All of an integration, one selected dead letter, a quarantined write-back row (its order is read again).
    assert sorted(replays) == sorted(
        [sorted(state.dead_orders), [state.dead_orders[1]], [state.failed_order]]
    )
    replayed = next(run for run in runs if len(run["conf"].get("order_ids") or []) == 2)
    assert replayed["run_type"] == "manual" and replayed["triggering_user_name"] == "admin"
    assert replayed["note"] == "Replay from the Kombo console"
    discarded = next(run for run in runs if run["conf"].get("discard_order_ids"))
    assert discarded["conf"] == {
        "discard_order_ids": [state.dead_orders[0]],
        "discard_quarantine_ids": [state.quarantine_id],
        "discard_reason": "candidate withdrew",
    }, confs
    audit = httpx.get(
        f"{live.url}/api/v2/eventLogs",
        headers={"Authorization": f"Bearer {tokens['admin']}"},
        params={"dag_id": WRITEBACK, "event": "trigger_dag_run"},
        timeout=30.0,
    ).json()["event_logs"]
    assert {entry["run_id"] for entry in audit} >= {replayed["dag_run_id"], discarded["dag_run_id"]}
    assert {entry["owner"] for entry in audit} == {"admin"}


# What the pages show --------------------------------------------------------------------------------------


def test_overview_shows_every_integration_unhealthy_first(live: LiveAirflow, tokens: dict[str, str]) -> None:
    with client(live, tokens["viewer"]) as http:
        page = http.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    assert html.index(DISABLED) < html.index(UNHEALTHY) < html.index(HEALTHY)
    for text in ("Troubled Inc", "Healthy GmbH", "2 dead letter(s)", "INTEGRATION.INACTIVE", LOG_URL):
        assert text in html
    # Relative links only: the page works under any prefix and behind a proxy.
    links = re.findall(r'(?:href|action)="([^"]*)"', html)
    assert links and not [link for link in links if link.startswith("/") and not link.startswith("//")]
    assert [link for link in links if link.startswith("http")] == [LOG_URL]


def test_dead_letters_page_lists_letters_and_quarantine_without_candidate_data(
    live: LiveAirflow, tokens: dict[str, str], seeded: Any
) -> None:
    _, state = seeded
    with client(live, tokens["viewer"]) as http:
        html = http.get("/dead-letters", params={"integration_id": UNHEALTHY}).text
    for text in (*state.dead_orders, "INTEGRATION.INACTIVE", "The integration is inactive.", LOG_URL):
        assert text in html
    assert "score 101 above max_score 100" in html and CANDIDATE_EMAIL not in html


def test_order_lookup_shows_the_history_and_candidates_only_to_editors(
    live: LiveAirflow, tokens: dict[str, str], seeded: Any
) -> None:
    _, state = seeded
    with client(live, tokens["viewer"]) as http:
        for term in (state.invited_order, state.invitation_id, state.application_id):
            html = http.get("/orders", params={"q": term}).text
            assert state.invited_order in html and state.invitation_id in html, term
            assert "ACCEPTED" in html and "sent" in html
            assert CANDIDATE_EMAIL not in html and "Lovelace" not in html
        assert "Nothing is known" in http.get("/orders", params={"q": "no-such-order"}).text
    with client(live, tokens["editor"]) as http:
        html = http.get("/orders", params={"q": state.invited_order}).text
    assert CANDIDATE_EMAIL in html and "Ada Lovelace" in html


def test_webhook_log_shows_answers(live: LiveAirflow, tokens: dict[str, str], seeded: Any) -> None:
    _, state = seeded
    with client(live, tokens["viewer"]) as http:
        html = http.get("/webhooks", params={"answer": 422}).text
    assert state.rejected_event in html and "ORDER_REJECTED" in html and "evt-accepted-1" not in html
    with client(live, tokens["viewer"]) as http:
        everything = http.get("/webhooks", params={"answer": ""})  # the form's "all"
    assert everything.status_code == 200 and "evt-accepted-1" in everything.text


def test_csv_exports(live: LiveAirflow, tokens: dict[str, str], seeded: Any) -> None:
    _, state = seeded
    with client(live, tokens["viewer"]) as http:
        overview = http.get("/export/overview.csv")
        assert overview.status_code == 200 and overview.headers["content-type"].startswith("text/csv")
        assert "attachment" in overview.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(overview.text)))
        assert [row["Integration"] for row in rows] == [DISABLED, UNHEALTHY, HEALTHY]
        troubled = rows[1]
        assert (troubled["Health"], troubled["Dead letters"], troubled["Kombo log"]) == (
            "unhealthy",
            "2",
            LOG_URL,
        )
        letters = list(csv.DictReader(io.StringIO(http.get("/export/dead_letters.csv").text)))
        assert sorted(row["Order"] for row in letters) == sorted(state.dead_orders)
        jailed = list(csv.DictReader(io.StringIO(http.get("/export/quarantine.csv").text)))
        assert [row["Id"] for row in jailed] == [str(state.quarantine_id)]
        assert CANDIDATE_EMAIL not in jailed[0]["Reason"]
        events = list(csv.DictReader(io.StringIO(http.get("/export/webhooks.csv").text)))
        assert {row["Answer"] for row in events} == {"200", "422"}
        orders = http.get("/export/orders.csv", params={"q": state.invited_order}).text
        assert state.invited_order in orders and CANDIDATE_EMAIL not in orders
        assert "Candidate e-mail" not in orders
        assert http.get("/export/secrets.csv").status_code == 404


def test_funnel_run_history_and_erasures_pages(
    live: LiveAirflow, tokens: dict[str, str], seeded: Any
) -> None:
    _, state = seeded
    with client(live, tokens["viewer"]) as http:
        funnel = http.get("/funnel", params={"period": "7d"})
        assert funnel.status_code == 200 and funnel.text.count("<svg") == 7
        assert '<div class="big" id="total-received">5</div>' in funnel.text
        assert '<div class="big" id="total-written">1</div>' in funnel.text
        rows = list(
            csv.DictReader(io.StringIO(http.get("/export/funnel.csv", params={"period": "30d"}).text))
        )
        assert (
            sum(int(row["Received"]) for row in rows) == 5
            and sum(int(row["Webhooks 422"]) for row in rows) == 1
        )
        runs = list(csv.DictReader(io.StringIO(http.get("/export/runs.csv").text)))
        assert [(row["Job"], row["Status"]) for row in runs] == [
            ("writeback", "failed"),
            ("intake", "success"),
        ]
        one_job = http.get("/runs", params={"job": "writeback"}).text
        assert "manual__seed" in one_job and "scheduled__2026-01-05" not in one_job
        erasures = list(csv.DictReader(io.StringIO(http.get("/export/erasures.csv").text)))
        assert [(row["Kind"], row["Orders"]) for row in erasures] == [("request", "1")]
        page = http.get("/erasures").text
        assert state.erased_order not in page and "grace.hopper" not in page


def test_the_plugin_puts_kombo_in_the_navigation(live: LiveAirflow, tokens: dict[str, str]) -> None:
    response = httpx.get(
        f"{live.url}/api/v2/plugins", headers={"Authorization": f"Bearer {tokens['viewer']}"}, timeout=30.0
    )
    assert response.status_code == 200
    views = [view for plugin in response.json()["plugins"] for view in plugin["external_views"]]
    kombo = next(view for view in views if view["name"] == "Kombo")
    assert (kombo["href"], kombo["destination"], kombo["url_route"]) == ("kombo-console/", "nav", "kombo")


# In a browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Any:
    binary = chromium_path()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI=true): .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed: `apt-get install -y chromium` (see README, Prerequisites)")
    browser = HeadlessChromium(binary)
    yield browser
    browser.close()


def test_overview_in_a_browser_renders_its_table_and_its_script_filters_it(
    live: LiveAirflow, tokens: dict[str, str], chromium: HeadlessChromium
) -> None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    url = f"{live.url}{CONSOLE}/"
    # Logged out: the browser gets 401 and the page holds no data.
    assert chromium.open(url) == 401
    assert UNHEALTHY not in chromium.evaluate("document.body.innerText")

    chromium.set_cookie(COOKIE_NAME_JWT_TOKEN, tokens["viewer"], live.url)
    assert chromium.open(url, ready="document.querySelector('#overview[data-ready=true]') !== null") == 200
    rows = chromium.evaluate(
        "Array.from(document.querySelectorAll('#overview tbody tr')).map(r => r.dataset.integration)"
    )
    assert rows == [DISABLED, UNHEALTHY, HEALTHY]
    assert chromium.evaluate("document.getElementById('overview-count').textContent") == "3 of 3 shown"
    # The filter box narrows the rows, and a header click sorts them.
    chromium.evaluate(
        "(() => { const f = document.getElementById('overview-filter'); f.value = 'troubled';"
        " f.dispatchEvent(new Event('input')); })()"
    )
    assert chromium.evaluate("document.getElementById('overview-count').textContent") == "1 of 3 shown"
    shown = chromium.evaluate(
        "Array.from(document.querySelectorAll('#overview tbody tr')).filter(r => !r.hidden)"
        ".map(r => r.dataset.integration)"
    )
    assert shown == [UNHEALTHY]
    chromium.evaluate(
        "(() => { const f = document.getElementById('overview-filter'); f.value = '';"
        " f.dispatchEvent(new Event('input')); })()"
    )
    chromium.evaluate(
        "Array.from(document.querySelectorAll('#overview thead th')).find(th => th.textContent === 'ATS').click()"
    )
    tools = chromium.evaluate(
        "Array.from(document.querySelectorAll('#overview tbody tr')).map(r => r.dataset.integration)"
    )
    assert tools == [HEALTHY, DISABLED, UNHEALTHY]  # greenhouse, lever, workday
    # The dead letters page renders its action forms for the same session.
    assert chromium.open(f"{live.url}{CONSOLE}/dead-letters") == 200
    assert chromium.evaluate("document.querySelectorAll('#letters tbody tr').length") == 2


def test_funnel_in_a_browser_draws_its_charts(
    live: LiveAirflow, tokens: dict[str, str], chromium: HeadlessChromium
) -> None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    chromium.set_cookie(COOKIE_NAME_JWT_TOKEN, tokens["viewer"], live.url)
    ready = "document.querySelector('#funnel[data-ready=true]') !== null"
    assert chromium.open(f"{live.url}{CONSOLE}/funnel?period=7d", ready=ready) == 200
    # Seven charts drawn, each with a size on the page, and bars in them; the funnel's first bar is the widest.
    sizes = chromium.evaluate(
        "Array.from(document.querySelectorAll('svg.chart')).map(s => [s.getBoundingClientRect().width,"
        " s.getBoundingClientRect().height, s.querySelectorAll('rect').length])"
    )
    assert len(sizes) == 7 and all(width > 100 and height > 50 and bars > 0 for width, height, bars in sizes)
    widths = chromium.evaluate(
        "Array.from(document.querySelectorAll('#chart-funnel rect')).map(r => r.getBBox().width)"
    )
    assert len(widths) == 4 and widths[0] == max(widths) and widths[1] > 0
    assert chromium.evaluate("document.getElementById('total-received').textContent") == "5"
    # The period buttons reload the page for another period.
    chromium.evaluate("document.querySelector('button[value=today]').click()")
    assert chromium.open(f"{live.url}{CONSOLE}/funnel?period=today", ready=ready) == 200
    assert chromium.evaluate("document.querySelector('button[aria-pressed]').value") == "today"


def test_the_airflow_ui_shows_kombo_in_its_navigation_and_embeds_the_console(
    live: LiveAirflow, tokens: dict[str, str], chromium: HeadlessChromium
) -> None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    chromium.set_cookie(COOKIE_NAME_JWT_TOKEN, tokens["viewer"], live.url)
    embedded = "(() => { const f = document.querySelector('iframe'); return f && f.contentDocument }) ()"
    rows = "document.querySelector('iframe').contentDocument.querySelectorAll('#overview[data-ready=true] tbody tr')"
    assert chromium.open(f"{live.url}/plugin/kombo", ready=f"!!{embedded} && {rows}.length > 0") == 200
    navigation = chromium.evaluate(
        "Array.from(document.querySelectorAll('a, button')).map(e => e.textContent)"
    )
    assert "Kombo" in [item.strip() for item in navigation]
    # The UI resolved the plugin's relative href against its base URL.
    assert chromium.evaluate("document.querySelector('iframe').src") == f"{live.url}{CONSOLE}/"
    assert chromium.evaluate(f"{rows}.length") == 3


def test_the_api_server_log_holds_no_candidate_data(live: LiveAirflow, tokens: dict[str, str]) -> None:
    with client(live, tokens["editor"]) as http:
        assert CANDIDATE_EMAIL in http.get("/orders", params={"q": "ord-invited-1"}).text
    log = live.log_text()
    assert "console: admin triggered kombo_result_writeback run" in log
    assert CANDIDATE_EMAIL not in log and "Lovelace" not in log and "candidate withdrew" not in log
