"""The Kombo console served by a live `airflow api-server` with the SimpleAuthManager and three users (viewer,
user, admin), over a seeded state store: who gets what, what each page shows, the CSV exports, repairs that
become write-back DAG runs in Airflow's run history, and every view in a real (headless) browser after logging in
through Airflow's own login form, a logged-out browser that gets nothing, and a dead letter replayed from the
page and watched until a real scheduler has sent it to the Kombo sandbox.

One api-server per module (about 15-25 s to start, after a `dags reserialize` so the write-back DAG exists in
its metadata DB): every test here shares it, which is why the module is long (over 400 lines) rather than split
into modules that would each start their own. The replay test starts a scheduler for itself only, changes the
seeded state (a fourth integration, a sent result) and so comes last.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from kombo_sync.state.store import StateStore
from sandbox import warehouse
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
def warehouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty results warehouse (SQLite) for the replay test's write-back run."""
    url = f"sqlite:///{tmp_path_factory.mktemp('console-warehouse') / 'warehouse.db'}"
    warehouse.create_schema(url).dispose()
    return url


@pytest.fixture(scope="module")
def live(
    seeded: Any, warehouse_url: str, tmp_path_factory: pytest.TempPathFactory, _kombo_sandbox_server: Any
) -> Any:
    state_path, _ = seeded
    home = tmp_path_factory.mktemp("console-airflow")
    sandbox = _kombo_sandbox_server
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
        # For the write-back run the replay test's scheduler executes (the api-server itself calls neither).
        "AIRFLOW_CONN_KOMBO_DEFAULT": json.dumps(
            {
                "conn_type": "http",
                "host": sandbox.api_url,
                "password": sandbox.api_key,
                "extra": {"max_retries": 2, "backoff_base": 0.05},
            }
        ),
        "AIRFLOW_CONN_KOMBO_WAREHOUSE": json.dumps(
            {"conn_type": "generic", "extra": {"sqlalchemy_url": warehouse_url}}
        ),
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
        # Relative, resolved against the action's URL: back to the dead letters page under any prefix.
        assert location.startswith("../dead-letters?") and "queued+as+run" in location
        assert urljoin(f"{live.url}{CONSOLE}/actions/replay", location).startswith(
            f"{live.url}{CONSOLE}/dead-letters?"
        )
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
        shown = http.get(urljoin(f"{live.url}{CONSOLE}/actions/discard", no_reason.headers["location"]))
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


# Every view in a browser, logged in through Airflow's own login form -----------------------------------------

# The rows of a table as the user sees them: {header text: cell text}, hidden (filtered) rows left out.
TABLE = (
    "(id => { const t = document.getElementById(id); if (!t) return null;"
    " const heads = Array.from(t.querySelectorAll('thead th')).map(h => h.textContent.trim());"
    " return Array.from(t.querySelectorAll('tbody tr')).filter(r => !r.hidden).map(r =>"
    " Object.fromEntries(Array.from(r.cells).map((c, i) => [heads[i], c.textContent.trim()]))); })"
)
READY = "document.querySelectorAll('table[data-sortable]:not([data-ready=true])').length === 0"
SEEDED_IDS = ("ord-", "inv-platform-42", "app-ord", "evt-", "manual__seed", "scheduled__2026", HEALTHY, UNHEALTHY,
              DISABLED, "Troubled Inc", "Healthy GmbH", "INTEGRATION.INACTIVE", "candidate asked")  # fmt: skip


def table(browser: HeadlessChromium, table_id: str) -> list[dict[str, str]]:
    rows = browser.evaluate(f"{TABLE}({json.dumps(table_id)})")
    assert rows is not None, f"the page has no table #{table_id}"
    return list(rows)


def text_of(browser: HeadlessChromium, element_id: str) -> str:
    return str(browser.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent")).strip()


@pytest.fixture
def viewer_browser(live: LiveAirflow, chromium: HeadlessChromium) -> HeadlessChromium:
    """The browser logged in as the viewer through Airflow's login page, on the console's overview."""
    status = chromium.login(live.url, "viewer", PASSWORDS["viewer"], f"{CONSOLE}/")
    assert status == 200
    return chromium


def test_logging_in_through_airflows_form_opens_the_console(
    live: LiveAirflow, chromium: HeadlessChromium
) -> None:
    chromium.clear_cookies()
    assert chromium.open(f"{live.url}{CONSOLE}/") == 401
    assert chromium.login(live.url, "viewer", PASSWORDS["viewer"], f"{CONSOLE}/") == 200
    chromium.wait_for(READY)
    assert chromium.evaluate("location.pathname") == f"{CONSOLE}/"
    assert chromium.evaluate("document.querySelector('.user').textContent") == "viewer"
    assert [row["Integration"] for row in table(chromium, "overview")] == [DISABLED, UNHEALTHY, HEALTHY]
    # A wrong password keeps the browser on the login page, with no session.
    chromium.clear_cookies()
    chromium.open(f"{live.url}/auth/login?next={CONSOLE}/")
    chromium.type_text("input[name=username]", "viewer")
    chromium.type_text("input[name=password]", "wrong-password")
    chromium.evaluate("document.querySelector('button[type=submit]').click()")
    chromium.wait_for("document.body.innerText.toLowerCase().includes('invalid')")
    assert chromium.evaluate("location.pathname") == "/auth/login"
    assert chromium.evaluate("document.cookie") == ""


def test_overview_in_a_browser_shows_the_seeded_numbers(
    live: LiveAirflow, viewer_browser: HeadlessChromium
) -> None:
    browser = viewer_browser
    assert browser.open(f"{live.url}{CONSOLE}/", ready=READY) == 200
    rows = {row["Integration"]: row for row in table(browser, "overview")}
    assert list(rows) == [DISABLED, UNHEALTHY, HEALTHY]
    troubled, healthy, paused = rows[UNHEALTHY], rows[HEALTHY], rows[DISABLED]
    assert (troubled["Health"], troubled["Customer"], troubled["Dead letters"]) == (
        "unhealthy",
        "Troubled Inc",
        "2",
    )
    assert "INTEGRATION.INACTIVE" in troubled["Last error"]
    assert (troubled["7 d failed"], troubled["7 d rejected"], troubled["7 d received"]) == ("1", "1", "0")
    assert (healthy["Health"], healthy["Dead letters"], healthy["Quarantined"]) == ("ok", "0", "0")
    # invited-1 (invited), received-1 today and old-1 three days ago (received); its one result was sent.
    assert (healthy["7 d invited"], healthy["7 d received"], healthy["Results written (7 d)"]) == (
        "1",
        "2",
        "1",
    )
    assert (paused["Enabled"], paused["Health"]) == ("no", "unhealthy")
    assert text_of(browser, "overview-count") == "3 of 3 shown"


# How long before the seed's time each counted thing happened (tests/support/console.py): orders received
# (invited-1, received-1, old-1, failed-1, rejected-1; the erased one is 40 days old), the one invited order, the
# accepted and the rejected webhook. The one result was sent at the seed's time.
SEEDED_AGO = {
    "received": (timedelta(minutes=30), timedelta(0), timedelta(days=3), timedelta(minutes=20), timedelta(minutes=10)),
    "invited": (timedelta(minutes=30),),
    "Webhooks 2xx": (timedelta(minutes=30),),
    "Webhooks 422": (timedelta(minutes=10),),
}  # fmt: skip


def expected_funnel(state: Any, period: str, now: datetime) -> tuple[dict[str, int], int]:
    """What the funnel must count for the period (its totals by name, and how many buckets it shows)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = {"today": midnight, "7d": now - timedelta(days=7), "30d": now - timedelta(days=30)}[period]
    counts = {name: sum(1 for ago in agos if state.now - ago >= since) for name, agos in SEEDED_AGO.items()}
    counts["written"] = 1
    buckets = now.hour + 1 if period == "today" else (now.date() - since.date()).days + 1
    return counts, buckets


def test_funnel_in_a_browser_shows_each_periods_numbers(
    live: LiveAirflow, viewer_browser: HeadlessChromium, seeded: Any
) -> None:
    _, state = seeded
    browser = viewer_browser
    ready = "document.querySelector('#funnel[data-ready=true]') !== null"
    assert browser.open(f"{live.url}{CONSOLE}/funnel?period=7d", ready=ready) == 200
    for period in ("today", "7d", "30d"):
        # The period's button, clicked as a user would (a GET form).
        status = browser.submit(f"document.querySelector('button[value=\"{period}\"]').click()", ready=ready)
        assert (
            status == 200 and browser.evaluate("new URL(location.href).searchParams.get('period')") == period
        )
        assert browser.evaluate("document.querySelector('button[aria-pressed]').value") == period
        expected, bucket_count = expected_funnel(state, period, datetime.now(UTC))
        totals = {name: int(text_of(browser, f"total-{name}")) for name in ("received", "invited", "written")}
        assert totals == {name: expected[name] for name in totals}, period
        buckets = table(browser, "funnel")
        assert len(buckets) == bucket_count, period
        for column in ("Webhooks 2xx", "Webhooks 422"):
            assert sum(int(row[column]) for row in buckets) == expected[column], (period, column)
        assert sum(int(row["Received"]) for row in buckets) == expected["received"]
        assert browser.evaluate("document.querySelectorAll('svg.chart').length") == 7


def test_dead_letters_and_quarantine_in_a_browser(
    live: LiveAirflow, viewer_browser: HeadlessChromium, seeded: Any
) -> None:
    _, state = seeded
    browser = viewer_browser
    assert browser.open(f"{live.url}{CONSOLE}/dead-letters", ready=READY) == 200
    letters = table(browser, "letters")
    assert sorted(row["Order"] for row in letters) == sorted(state.dead_orders)
    assert {(row["Integration"], row["State"], row["Code"]) for row in letters} == {
        (UNHEALTHY, "dead", "INTEGRATION.INACTIVE")
    }
    assert text_of(browser, "letters-count") == "2 of 2 shown"
    jailed = table(browser, "quarantine")
    assert [(row["Id"], row["Job"], row["Key"]) for row in jailed] == [
        (str(state.quarantine_id), "writeback", state.failed_order)
    ]
    assert (
        "score 101 above max_score 100" in jailed[0]["Reason"] and CANDIDATE_EMAIL not in jailed[0]["Reason"]
    )
    # The overview's integration link opens the page for that integration only.
    assert browser.open(f"{live.url}{CONSOLE}/", ready=READY) == 200
    link = f"Array.from(document.querySelectorAll('#overview a')).find(a => a.textContent === '{UNHEALTHY}')"
    assert browser.submit(f"{link}.click()", ready=READY) == 200
    assert browser.evaluate("new URL(location.href).searchParams.get('integration_id')") == UNHEALTHY
    assert sorted(row["Order"] for row in table(browser, "letters")) == sorted(state.dead_orders)
    assert CANDIDATE_EMAIL not in browser.evaluate("document.body.innerText")


def test_order_lookup_in_a_browser_finds_an_order_by_each_kind_of_id(
    live: LiveAirflow, viewer_browser: HeadlessChromium, seeded: Any
) -> None:
    _, state = seeded
    browser = viewer_browser
    assert browser.open(f"{live.url}{CONSOLE}/orders") == 200
    for term in (state.invited_order, state.invitation_id, state.application_id):
        # Typed into the search box and sent with the button, as a user does.
        browser.evaluate("document.querySelector('input[name=q]').value = ''")
        browser.type_text("input[name=q]", term)
        assert (
            browser.submit("document.querySelector('form.toolbar button[type=submit]').click()", ready=READY)
            == 200
        )
        found = table(browser, "orders")
        assert [(row["Order"], row["Integration"], row["State"], row["Invitation"]) for row in found] == [
            (state.invited_order, HEALTHY, "invited", state.invitation_id)
        ], term
        assert [row["Invitation id"] for row in table(browser, "invitations")] == [state.invitation_id]
        assert [(row["State"], row["Score"]) for row in table(browser, "versions")] == [("sent", "88")]
        assert [(row["Event"], row["Answer"]) for row in table(browser, "order-webhooks")] == [
            ("evt-accepted-1", "200")
        ]
        text = browser.evaluate("document.body.innerText")
        assert CANDIDATE_EMAIL not in text and "Lovelace" not in text
    browser.evaluate("document.querySelector('input[name=q]').value = ''")
    browser.type_text("input[name=q]", "no-such-order")
    assert browser.submit("document.querySelector('form.toolbar button[type=submit]').click()") == 200
    assert "Nothing is known" in browser.evaluate("document.body.innerText")


def test_webhook_log_runs_and_erasures_in_a_browser(
    live: LiveAirflow, viewer_browser: HeadlessChromium, seeded: Any
) -> None:
    _, state = seeded
    browser = viewer_browser
    assert browser.open(f"{live.url}{CONSOLE}/webhooks", ready=READY) == 200
    events = table(browser, "webhooks")
    assert sorted((row["Event"], row["Answer"]) for row in events) == [
        ("evt-accepted-1", "200"),
        (state.rejected_event, "422"),
    ]
    # The answer picker reloads the page with one status.
    picked = "(() => { const s = document.querySelector('select[name=answer]'); s.value = '422';" \
             " s.dispatchEvent(new Event('change')); })()"  # fmt: skip
    assert browser.submit(picked, ready=READY) == 200
    assert [(row["Event"], row["Order"]) for row in table(browser, "webhooks")] == [
        (state.rejected_event, "ord-rejected-1")
    ]

    assert browser.open(f"{live.url}{CONSOLE}/runs", ready=READY) == 200
    runs = table(browser, "runs")
    assert [(row["Job"], row["Run"], row["Status"]) for row in runs] == [
        ("writeback", "manual__seed", "failed"),
        ("intake", "scheduled__2026-01-05T08:00:00+00:00", "success"),
    ]
    assert "dead=2" in runs[0]["Summary"] and "orders_recorded=3" in runs[1]["Summary"]
    picked = "(() => { const s = document.querySelector('select[name=job]'); s.value = 'intake';" \
             " s.dispatchEvent(new Event('change')); })()"  # fmt: skip
    assert browser.submit(picked, ready=READY) == 200
    assert [row["Job"] for row in table(browser, "runs")] == ["intake"]

    assert browser.open(f"{live.url}{CONSOLE}/erasures", ready=READY) == 200
    erasures = table(browser, "erasures")
    assert [(row["Kind"], row["Requested by"], row["Orders"], row["Run"]) for row in erasures] == [
        ("request", "admin", "1", "manual__erase")
    ]
    text = browser.evaluate("document.body.innerText")
    assert state.erased_order not in text and "grace.hopper" not in text


def test_a_logged_out_browser_gets_no_data_on_any_view_or_export(
    live: LiveAirflow, chromium: HeadlessChromium
) -> None:
    from kombo_sync.console.app import EXPORTS

    chromium.clear_cookies()
    views = [path for path in PAGES if not path.startswith("/export/")]
    views += ["/funnel?period=today", "/funnel?period=30d", "/orders?q=inv-platform-42",
              "/orders?q=app-ord-invited-1", "/webhooks?answer=422", "/runs?job=writeback",
              "/dead-letters?integration_id=" + UNHEALTHY]  # fmt: skip
    exports = [f"/export/{name}.csv" for name in EXPORTS] + ["/export/orders.csv?q=ord-invited-1"]
    for path in views + exports:
        status = chromium.open(f"{live.url}{CONSOLE}{path}")
        text = chromium.evaluate("document.documentElement.outerHTML")
        assert status == 401, (path, status)
        assert "Not authenticated" in text, path
        assert not [seeded for seeded in SEEDED_IDS if seeded in text], path
    # A session cookie that is not Airflow's own token: 403, no data either (Airflow's middleware then deletes
    # the cookie, so it is set again for each page).
    for path in ("/", "/dead-letters", "/export/overview.csv"):
        chromium.set_cookie("_token", "not-a-jwt", live.url)
        assert chromium.open(f"{live.url}{CONSOLE}{path}") == 403, path
        text = chromium.evaluate("document.documentElement.outerHTML")
        assert not [seeded for seeded in SEEDED_IDS if seeded in text], path
    chromium.clear_cookies()


# A replay clicked in the page, run by a real scheduler, sent to the Kombo sandbox (last: it changes the state) --


def _dag_runs(live: LiveAirflow, admin: str, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{live.url}/api/v2/dags/{WRITEBACK}/dagRuns",
        headers={"Authorization": f"Bearer {admin}"},
        params=params,
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["dag_runs"])


def _await_run(live: LiveAirflow, admin: str, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = "queued"
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{live.url}/api/v2/dags/{WRITEBACK}/dagRuns/{run_id}",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30.0,
        )
        assert response.status_code == 200, response.text
        state = str(response.json()["state"])
        if state in ("success", "failed"):
            return state
        scheduler = live.processes.get("scheduler")
        assert scheduler is None or scheduler.poll() is None, live.log_text("scheduler")[-3000:]
        time.sleep(2)
    return state


@pytest.mark.timeout(600)
def test_a_dead_letter_replayed_in_the_browser_is_sent_by_the_scheduler(
    live: LiveAirflow,
    chromium: HeadlessChromium,
    seeded: Any,
    warehouse_url: str,
    tokens: dict[str, str],
    kombo_sandbox: Any,
) -> None:
    from kombo_sync.state.integrations import IntegrationRepository
    from kombo_sync.writeback.job import run_writeback
    from tests.integration.writeback_helpers import (
        expected_payload,
        fast_client,
        new_orders,
        result_row,
        wb_settings,
    )

    state_path, _ = seeded
    admin = tokens["admin"]
    # An integration of the sandbox whose result became a dead letter while Kombo said it was inactive: the real
    # write-back job sent it then. Kombo now accepts results for it again.
    integration = kombo_sandbox.admin.create_integration(tool="workday", organization_name="Replay Corp")[
        "id"
    ]
    store = StateStore(f"sqlite:///{state_path}")
    try:
        IntegrationRepository(store).upsert(integration, source="bootstrap", customer_key="replay",
                                            organization_name="Replay Corp")  # fmt: skip
        _, (order_id,) = new_orders(store, kombo_sandbox, 1, integration)
        row = result_row(order_id)
        warehouse.write_results(warehouse_url, [row], replace=True)
        kombo_sandbox.admin.set_integration_state(integration, status="INACTIVE")
        with fast_client(kombo_sandbox) as client:
            sent = run_writeback(
                store, warehouse.make_engine(warehouse_url), client, wb_settings(), order_ids=[order_id]
            )
        assert (sent["send"]["sent"], sent["send"]["dead"]) == (0, 1)
    finally:
        store.dispose()
    kombo_sandbox.admin.set_integration_state(integration, status="ACTIVE")
    assert kombo_sandbox.admin.get_order(order_id)["result"] is None

    # The admin logs in, ticks the dead letter and clicks "Replay selected".
    page = f"{live.url}{CONSOLE}/dead-letters?integration_id={integration}"
    assert chromium.login(live.url, "admin", PASSWORDS["admin"], f"{CONSOLE}/dead-letters") == 200
    assert chromium.open(page, ready=READY) == 200
    assert [(row["Order"], row["Code"]) for row in table(chromium, "letters")] == [
        (order_id, "INTEGRATION.INACTIVE")
    ]
    chromium.evaluate(
        f"document.querySelector('#letters input[name=order_id][value=\"{order_id}\"]').click()"
    )
    replay = "Array.from(document.querySelectorAll('#letters-form button')).find(b => b.textContent === 'Replay selected').click()"
    assert chromium.submit(replay, ready=READY) == 200
    message = chromium.evaluate("document.querySelector('.flash[role=status]').textContent")
    found = re.search(r"Replay of 1 order\(s\) queued as run (\S+)", message)
    assert found, message
    run_id = found.group(1)
    assert _dag_runs(live, admin, run_id_pattern=run_id)[0]["conf"] == {"order_ids": [order_id]}

    # Runs other tests queued (their orders are not in the sandbox) are not this test's business.
    for other in _dag_runs(live, admin, state="queued"):
        if other["dag_run_id"] != run_id:
            httpx.patch(
                f"{live.url}/api/v2/dags/{WRITEBACK}/dagRuns/{other['dag_run_id']}",
                headers={"Authorization": f"Bearer {admin}"}, json={"state": "failed"}, timeout=30.0,
            ).raise_for_status()  # fmt: skip
    live.airflow("pools", "set", "kombo_api", "4", "Kombo calls")
    unpause = httpx.patch(
        f"{live.url}/api/v2/dags/{WRITEBACK}",
        headers={"Authorization": f"Bearer {admin}"},
        json={"is_paused": False},
        timeout=30.0,
    )
    assert unpause.status_code == 200, unpause.text
    live.env.update({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4"})
    started = time.monotonic()
    live.restart("scheduler")
    try:
        state = _await_run(live, admin, run_id, timeout=300)
    finally:
        live.stop_components("scheduler")
        httpx.patch(
            f"{live.url}/api/v2/dags/{WRITEBACK}",
            headers={"Authorization": f"Bearer {admin}"},
            json={"is_paused": True},
            timeout=30.0,
        )
    print(f"replayed run {state} {time.monotonic() - started:.0f} s after the scheduler started "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    assert state == "success", live.log_text("scheduler")[-3000:]

    # Kombo holds the result, exactly as the warehouse row maps, once.
    assert kombo_sandbox.admin.get_order(order_id)["result"] == expected_payload(row)
    applied = [
        write for write in kombo_sandbox.admin.get_order(order_id)["results"] if write["outcome"] == "applied"
    ]
    assert len(applied) == 1
    # The page, reloaded, shows the dead letter gone and the result sent.
    assert chromium.open(page, ready=READY) == 200
    assert table(chromium, "letters") == [] and "No dead letters." in chromium.evaluate(
        "document.body.innerText"
    )
    assert chromium.open(f"{live.url}{CONSOLE}/orders?q={order_id}", ready=READY) == 200
    versions = table(chromium, "versions")
    assert [(version["State"], version["Attempts"] != "") for version in versions] == [("sent", True)]
    assert versions[0]["Sent"]  # its last refusal (INTEGRATION.INACTIVE) stays, labelled as such
