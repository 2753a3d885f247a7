"""The Kombo console at volume: every page's p50/p95 against the 300 ms p95 target, on SQLite and PostgreSQL,
and whether the pages' queries hold back the pipeline's writers.

Fills a fresh state store (a temporary SQLite file, and a PostgreSQL database created and dropped on
127.0.0.1:5432) with 1,000 integrations, 1,000,000 orders spread over a year, their invitations, 100,000 outbox
rows, 300,000 webhook events, 10,000 quarantined rows, 100,000 job runs and 400 erasures, in a few set-based
INSERT ... SELECT statements (a recursive CTE on SQLite, generate_series on PostgreSQL). Then it times each page
through the console's FastAPI app in-process (a test client, a viewer whose login is faked: the auth manager's
check is Airflow's cost, not the console's), and the page's queries alone, and prints p50 / p95 and p95 / 300 ms.
Last, a batch of order inserts and claims is timed alone and beside a thread that runs the heaviest page queries
without pause, in the same run. The load average is printed with the figures: on a busy machine they are slower.

    .venv/bin/python bench/console.py                      # the full size (a few minutes)
    .venv/bin/python bench/console.py --quick              # 20,000 orders, a fast check
    .venv/bin/python bench/console.py --databases sqlite   # one database
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

import sqlalchemy as sa  # noqa: E402

from kombo_sync.console.queries import ConsoleQueries  # noqa: E402
from kombo_sync.state.orders import OrderRepository  # noqa: E402
from kombo_sync.state.store import StateStore  # noqa: E402
from tests.support.scratch_db import scratch_database  # noqa: E402
from tests.support.webhooks import order_event  # noqa: E402

TARGET_MS = 300.0
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
YEAR_S = 365 * 86400


@dataclass(frozen=True)
class Volume:
    integrations: int
    orders: int
    outbox: int

    @property
    def webhook_events(self) -> int:
        return self.orders * 3 // 10  # about a third of the orders arrive by webhook

    @property
    def quarantined(self) -> int:
        return max(self.orders // 100, 10)

    @property
    def runs(self) -> int:
        return max(self.orders // 10, 100)

    @property
    def erasures(self) -> int:
        return 400


class Sql:
    """The few expressions that differ between SQLite and PostgreSQL in the fill statements."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def seq(self, count: int) -> tuple[str, str]:
        """(prefix, source) of a statement that selects `i` from 1 to count."""
        if self.dialect == "postgresql":
            return "", f"generate_series(1::bigint, {count}) AS seq(i)"
        return (
            f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {count}) ",
            "seq",
        )

    def ts(self, seconds: str) -> str:
        """A timestamp from a Unix time expression, as the store keeps it."""
        if self.dialect == "postgresql":
            return f"to_timestamp({seconds})"
        return f"(strftime('%Y-%m-%d %H:%M:%S', {seconds}, 'unixepoch') || '.000000')"

    def pad(self, expr: str, width: int = 4) -> str:
        if self.dialect == "postgresql":
            return f"lpad(({expr})::text, {width}, '0')"
        return f"printf('%0{width}d', {expr})"

    def json(self, text: str) -> str:
        literal = "'" + text.replace("'", "''") + "'"
        return f"{literal}::json" if self.dialect == "postgresql" else literal

    def least(self, a: str, b: str) -> str:
        return f"least({a}, {b})" if self.dialect == "postgresql" else f"min({a}, {b})"

    def boolean(self, expr: str) -> str:
        return f"({expr})" if self.dialect == "postgresql" else f"(CASE WHEN {expr} THEN 1 ELSE 0 END)"


def fill(store: StateStore, volume: Volume, now_epoch: int) -> None:
    """Write the whole state in a handful of set-based statements (one transaction)."""
    sql = Sql(store.dialect)
    n, i_count, e = volume.orders, volume.integrations, now_epoch
    integration = f"'greenhouse:int' || {sql.pad('({k}) % ' + str(i_count))}"
    received = f"({e} - (({n} - {{k}}) * {YEAR_S}) / {n})"  # order k, the newest at `now`
    order_json = sql.json(
        '{"id": "x", "status": "OPEN", "candidate": {"email": "c@example.com", "first_name": "Ada", '
        '"last_name": "Lovelace", "remote_id": "cand-1"}, "application": {"remote_id": "app-1"}, '
        '"job": {"remote_id": "job-1", "name": "Backend engineer"}, "package_id": "pkg-1"}'
    )
    package_ids = sql.json('["pkg-0", "pkg-1", "pkg-2", "pkg-3", "pkg-4"]')
    payload = sql.json(
        '{"status": "COMPLETED", "score": 80, "max_score": 100, "result_url": "https://r.test/x"}'
    )
    summary = sql.json('{"orders_recorded": 10, "invited": 9, "failed": 1}')
    erasure_counts = sql.json('{"orders_erased": 50, "result_payloads_erased": 12}')
    jailed_row = sql.json('{"score": 101}')
    statements: list[str] = []

    prefix, source = sql.seq(i_count)
    statements.append(
        f"{prefix}INSERT INTO integrations (id, tool, category, customer_key, organization_name, status, source, "
        "enabled, settings, packages_hash, packages_published_at, published_package_ids, created_at, updated_at) "
        f"SELECT {integration.format(k='i - 1')}, 'greenhouse', 'ATS', 'cust' || (i - 1), "
        "'Customer ' || (i - 1), CASE WHEN i % 100 = 0 THEN 'INACTIVE' ELSE 'ACTIVE' END, 'bootstrap', "
        f"{sql.boolean('i % 250 <> 0')}, {sql.json('{}')}, 'hash', {sql.ts(str(e - 3600))}, "
        f"{package_ids}, {sql.ts(str(e - YEAR_S))}, {sql.ts(str(e))} "
        f"FROM {source}"
    )
    statements.append(
        f"{prefix}INSERT INTO poll_coverage (integration_id, created_after, covered_until, updated_at) "
        f"SELECT {integration.format(k='i - 1')}, {sql.ts(str(e - 86400))}, {sql.ts(str(e - 60))}, "
        f"{sql.ts(f'{e} - 60 - (i % 240)')} FROM {source}"
    )

    prefix, source = sql.seq(n)
    order_received = received.format(k="i")
    latency = "(30 + (i * 37) % 1800)"
    state = (
        f"CASE WHEN i > {n} - {max(n // 2000, 1)} THEN 'received' WHEN i % 100 < 80 THEN 'invited' "
        "WHEN i % 100 < 85 THEN 'duplicate' WHEN i % 100 < 92 THEN 'rejected' WHEN i % 100 < 95 THEN 'cancelled' "
        "WHEN i % 100 < 97 THEN 'failed' ELSE 'invited' END"
    )
    invited = f"(i <= {n} - {max(n // 2000, 1)} AND (i % 100 < 80 OR i % 100 >= 97))"
    statements.append(
        f"{prefix}INSERT INTO orders (id, integration_id, package_id, kombo_status, state, first_seen_via, "
        "candidate_email, candidate_first_name, candidate_last_name, application_remote_id, job_name, order_json, "
        "attempts, last_error, invitation_id, invitation_url, channel, received_at, updated_at, invited_at) "
        f"SELECT 'ord-' || i, {integration.format(k='i')}, 'pkg-' || (i % 5), 'OPEN', {state}, "
        "CASE WHEN i % 3 = 0 THEN 'webhook' ELSE 'poll' END, 'cand' || i || '@example.com', 'Ada', 'Lovelace', "
        f"'app-' || i, 'Backend engineer', {order_json}, 1, "
        "CASE WHEN i % 100 BETWEEN 95 AND 96 THEN 'platform answered 400 (invalid package)' END, "
        f"CASE WHEN {invited} THEN 'inv-' || i END, CASE WHEN {invited} THEN 'https://assess.test/i/' || i END, "
        f"CASE WHEN {invited} THEN 'platform' END, {sql.ts(order_received)}, "
        f"{sql.ts(f'{order_received} + {latency}')}, "
        f"CASE WHEN {invited} THEN {sql.ts(f'{order_received} + {latency}')} END "
        f"FROM {source}"
    )
    statements.append(
        "INSERT INTO invitations (order_id, channel, external_id, url, sent_at, attempt) "
        "SELECT id, 'platform', invitation_id, invitation_url, invited_at, 1 FROM orders "
        "WHERE invitation_id IS NOT NULL"
    )

    step = max(n // volume.outbox, 1)
    prefix, source = sql.seq(volume.outbox)
    created = sql.least(f"{received.format(k=f'(i * {step})')} + 600 + (i * 53) % 7200", str(e - 60))
    outbox_state = (
        "CASE WHEN i % 100 < 90 THEN 'sent' WHEN i % 100 < 93 THEN 'dead' WHEN i % 100 < 95 THEN 'not_writable' "
        "WHEN i % 100 < 97 THEN 'superseded' WHEN i % 100 < 98 THEN 'discarded' ELSE 'pending' END"
    )
    dead = "i % 100 BETWEEN 90 AND 94"
    sent_at = sql.least(f"{created} + 5 + i % 300", str(e))
    statements.append(
        f"{prefix}INSERT INTO result_outbox (order_id, payload_hash, integration_id, payload_json, state, attempts, "
        "last_error_code, last_error_message, log_url, source_updated_at, created_at, updated_at, sent_at) "
        f"SELECT 'ord-' || (i * {step}), 'h' || i, {integration.format(k=f'(i * {step})')}, "
        f"{payload}, "
        f"{outbox_state}, 1 + i % 3, CASE WHEN {dead} THEN 'INTEGRATION.INACTIVE' END, "
        f"CASE WHEN {dead} THEN 'The integration is inactive.' END, "
        f"CASE WHEN {dead} THEN 'https://app.kombo.dev/logs/req_' || i END, "
        f"{sql.ts(f'{created} - i % 900')}, {sql.ts(created)}, {sql.ts(sent_at)}, "
        f"CASE WHEN i % 100 < 90 THEN {sql.ts(sent_at)} END "
        f"FROM {source}"
    )

    prefix, source = sql.seq(volume.webhook_events)
    accepted = sql.json('{"status": "ACCEPTED", "already_known": false}')
    rejected = sql.json('{"status": "ORDER_REJECTED", "message": "The assessment package is not available."}')
    statements.append(
        f"{prefix}INSERT INTO webhook_events (id, type, integration_id, order_id, received_at, response_status, "
        f"response_body) SELECT 'evt-' || i, 'assessment:order-received', {integration.format(k='(i * 3)')}, "
        f"'ord-' || (i * 3), {sql.ts(received.format(k='(i * 3)'))}, "
        "CASE WHEN i % 50 < 46 THEN 200 WHEN i % 50 < 49 THEN 422 ELSE 500 END, "
        f"CASE WHEN i % 50 < 46 THEN {accepted} ELSE {rejected} END FROM {source}"
    )

    prefix, source = sql.seq(volume.quarantined)
    q_step = max(n // volume.quarantined, 1)
    q_created = sql.least(f"{received.format(k=f'(i * {q_step})')} + 3600", str(e - 60))
    statements.append(
        f"{prefix}INSERT INTO quarantine (job, source_key, reason, row_json, run_id, created_at, resolved_at, "
        "resolution) SELECT CASE i % 3 WHEN 0 THEN 'writeback' WHEN 1 THEN 'intake' ELSE 'catalog' END, "
        f"'ord-' || (i * {q_step}), 'score 101 above max_score 100', {jailed_row}, "
        f"'scheduled__' || i, {sql.ts(q_created)}, "
        f"CASE WHEN i % 10 <> 0 THEN {sql.ts(f'{q_created} + 86400')} END, "
        f"CASE WHEN i % 10 <> 0 THEN 'replayed' END FROM {source}"
    )

    prefix, source = sql.seq(volume.runs)
    started = f"({e} - (({volume.runs} - i) * {YEAR_S}) / {volume.runs})"
    statements.append(
        f"{prefix}INSERT INTO runs (job, run_id, started_at, finished_at, status, summary) "
        "SELECT CASE i % 5 WHEN 0 THEN 'intake' WHEN 1 THEN 'writeback' WHEN 2 THEN 'catalog' "
        "WHEN 3 THEN 'reconcile' ELSE 'housekeeping' END, 'scheduled__' || i, "
        f"{sql.ts(started)}, {sql.ts(f'{started} + 5 + i % 120')}, "
        "CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'success' END, "
        f"{summary} FROM {source}"
    )

    prefix, source = sql.seq(volume.erasures)
    ids = ", ".join(f'"ord-{k}"' for k in range(1, 51))
    statements.append(
        f"{prefix}INSERT INTO erasures (kind, reason, requested_by, run_id, integration_id, order_ids, counts, "
        "erased_at) SELECT CASE WHEN i % 20 = 0 THEN 'request' ELSE 'retention' END, "
        "'retention period of 180 days', NULL, 'scheduled__' || i, NULL, "
        f"{sql.json('[' + ids + ']')}, {erasure_counts}, "
        f"{sql.ts(f'{e} - ({volume.erasures} - i) * 86400')} FROM {source}"
    )
    with store.transaction() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "PRAGMA cache_size = -500000"
            )  # 500 MB: index inserts of a big load, not thrashing
        for statement in statements:
            # psycopg reads `%` as a placeholder even without parameters.
            conn.exec_driver_sql(statement.replace("%", "%%") if store.dialect == "postgresql" else statement)
    if store.dialect == "postgresql":
        # What autovacuum does soon after a load (statistics, the visibility map for index-only scans); SQLite is
        # measured as the pipeline leaves it (no ANALYZE).
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


class _Viewer:
    def get_name(self) -> str:
        return "bench-viewer"


def console_client(queries: ConsoleQueries) -> Any:
    """The console app in-process with a viewer logged in (the auth manager's own check is not ours to time)."""
    from fastapi.testclient import TestClient

    from kombo_sync.console import app as console_app
    from kombo_sync.console.security import read_access

    console_app.can_see_candidates = lambda request, user: False  # type: ignore[assignment]
    app = console_app.create_console_app(lambda: queries)
    app.dependency_overrides[read_access] = _Viewer
    return TestClient(app)


def pages(queries: ConsoleQueries, order_index: int) -> list[tuple[str, str, Callable[[], Any]]]:
    """(name, path, the page's queries alone) for every page."""
    order = f"ord-{order_index}"
    return [
        ("overview", "/", queries.overview),
        ("funnel today", "/funnel?period=today", lambda: queries.funnel("today")),
        ("funnel 7 days", "/funnel?period=7d", lambda: queries.funnel("7d")),
        ("funnel 30 days", "/funnel?period=30d", lambda: queries.funnel("30d")),
        ("dead letters", "/dead-letters", lambda: (queries.dead_letters(), queries.quarantine())),
        (
            "dead letters (one int.)",
            "/dead-letters?integration_id=greenhouse:int0007",
            lambda: (queries.dead_letters(integration_id="greenhouse:int0007"), queries.quarantine()),
        ),
        ("order by order id", f"/orders?q={order}", lambda: queries.order_history(order)),
        ("order by invitation id", f"/orders?q=inv-{order_index}", lambda: queries.order_history(f"inv-{order_index}")),
        ("order by application id", f"/orders?q=app-{order_index}", lambda: queries.order_history(f"app-{order_index}")),
        ("order not found", "/orders?q=nothing-123", lambda: queries.order_history("nothing-123")),
        ("webhook log", "/webhooks", queries.webhook_log),
        ("webhook log 422", "/webhooks?answer=422", lambda: queries.webhook_log(status=422)),
        ("run history", "/runs", lambda: (queries.run_history(), queries.run_jobs())),
        ("run history, one job", "/runs?job=writeback", lambda: (queries.run_history(job="writeback"), queries.run_jobs())),
        ("erasures", "/erasures", queries.erasures),
        ("overview CSV", "/export/overview.csv", queries.overview),
    ]  # fmt: skip


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def time_pages(
    store: StateStore, volume: Volume, repeat: int
) -> list[tuple[str, float, float, float, float, float]]:
    queries = ConsoleQueries(store)
    # An invited order that came by webhook and has a result: every part of its history is found.
    order_index = next(k for k in range(volume.orders // 2, volume.orders) if k % 30 == 0 and k % 100 < 80)
    figures = []
    with console_client(queries) as client:
        for name, path, query in pages(queries, order_index):
            assert client.get(path).status_code == 200, path  # warm: templates, plans, caches
            page_ms, page_cpu_ms, query_ms = [], [], []
            for _ in range(repeat):
                started, cpu = time.perf_counter(), time.process_time()
                response = client.get(path)
                page_ms.append((time.perf_counter() - started) * 1000)
                page_cpu_ms.append((time.process_time() - cpu) * 1000)
                assert response.status_code == 200, (path, response.status_code)
                started = time.perf_counter()
                query()
                query_ms.append((time.perf_counter() - started) * 1000)
            figures.append(
                (name, statistics.median(page_ms), percentile(page_ms, 0.95), statistics.median(page_cpu_ms),
                 statistics.median(query_ms), percentile(query_ms, 0.95))
            )  # fmt: skip
    return figures


def writer_batch(store: StateStore, batch: int, tag: str) -> list[float]:
    """`batch` orders recorded one transaction each (as the webhook does), then claimed in batches of 50 (as
    the intake's dispatch does); the latency of each transaction in ms."""
    repository = OrderRepository(store)
    latencies = []
    for index in range(batch):
        data = order_event(order_id=f"bench-{tag}-{index}", integration_id="greenhouse:int0001")["data"]
        started = time.perf_counter()
        repository.record_order(data, "webhook")
        latencies.append((time.perf_counter() - started) * 1000)
    claimed = 0
    while claimed < batch:
        started = time.perf_counter()
        found = repository.claim_orders_for_invite(
            f"bench-{tag}", 60, 50, integration_ids=["greenhouse:int0001"]
        )
        latencies.append((time.perf_counter() - started) * 1000)
        if not found:
            break
        claimed += len(found)
    return latencies


def writers_beside_pages(store: StateStore, batch: int) -> tuple[list[float], list[float], list[float]]:
    """Writer latencies alone, then beside a thread running the heaviest page queries back to back (and how
    long each of those took: a writer that waited for a reader would take about as long)."""
    writer_batch(store, 20, "warm")  # the first writes after the load pay for caches and the WAL
    alone = writer_batch(store, batch, "alone")
    queries = ConsoleQueries(store)
    stop = threading.Event()
    reads: list[float] = []

    def reader() -> None:
        while not stop.is_set():
            for read in (queries.overview, lambda: queries.funnel("30d")):
                started = time.perf_counter()
                read()
                reads.append((time.perf_counter() - started) * 1000)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)  # the reader is inside its queries
    try:
        beside = writer_batch(store, batch, "beside")
    finally:
        stop.set()
        thread.join()
    return alone, beside, reads


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def run(name: str, url: str, volume: Volume, repeat: int, batch: int) -> bool:
    store = StateStore(url)
    store.migrate()
    with store.transaction(readonly=True) as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
    started = time.perf_counter()
    if not count:  # a kept SQLite file (--sqlite-file) is measured again as it is
        fill(store, volume, int(datetime.now(UTC).timestamp()) - 60)
        with store.transaction(readonly=True) as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
    filled = time.perf_counter() - started
    print(
        f"\n== {name}: {volume.integrations:,} integrations, {count:,} orders, {volume.outbox:,} outbox rows, "
        f"{volume.webhook_events:,} webhook events, {volume.quarantined:,} quarantined rows, {volume.runs:,} runs "
        f"(filled in {filled:.1f} s); {load()}"
    )
    figures = time_pages(store, volume, repeat)
    print(
        f"{'page':<26}{'page p50':>10}{'page p95':>10}{'p95/300ms':>11}{'cpu p50':>9}{'query p50':>11}{'query p95':>11}"
    )
    ok = True
    for page, p50, p95, cpu50, q50, q95 in figures:
        ratio = p95 / TARGET_MS
        ok = ok and ratio <= 1.0
        flag = "" if ratio <= 1.0 else "  over target"
        print(f"{page:<26}{p50:>10.1f}{p95:>10.1f}{ratio:>11.2f}{cpu50:>9.1f}{q50:>11.1f}{q95:>11.1f}{flag}")
    print(
        f"(ms, {repeat} requests per page after one warm-up; page = the whole request through the app, cpu = this "
        f"process's CPU time for it (SQLite's work included, PostgreSQL's not), query = the page's queries alone; "
        f"{load()})"
    )

    alone, beside, reads = writers_beside_pages(store, batch)
    print(
        f"writers: {batch} order inserts + claims, one transaction each: alone {sum(alone):.0f} ms "
        f"(p50 {statistics.median(alone):.1f}, p95 {percentile(alone, 0.95):.1f}, max {max(alone):.1f} ms per "
        f"transaction); beside page queries {sum(beside):.0f} ms (p50 {statistics.median(beside):.1f}, "
        f"p95 {percentile(beside, 0.95):.1f}, max {max(beside):.1f} ms); ratio "
        f"{sum(beside) / max(sum(alone), 1e-9):.2f}; {len(reads)} page queries ran meanwhile, "
        f"{max(reads, default=0):.0f} ms the longest (a writer blocked by one would wait about as long)"
    )
    store.dispose()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20,000 orders, fewer repeats")
    parser.add_argument("--integrations", type=int, default=1000)
    parser.add_argument("--orders", type=int)
    parser.add_argument("--outbox", type=int)
    parser.add_argument("--repeat", type=int, help="requests per page (default 20, 5 with --quick)")
    parser.add_argument(
        "--writes", type=int, help="orders in the writers' batch (default 200, 50 with --quick)"
    )
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--sqlite-file", help="fill this SQLite file once and keep it; later runs measure it again"
    )
    parser.add_argument("--pg-admin-url", default=os.environ.get("KOMBO_BENCH_PG_URL", PG_ADMIN_URL))
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress shows when piped
    orders = args.orders or (20_000 if args.quick else 1_000_000)
    volume = Volume(args.integrations, orders, args.outbox or max(orders // 10, 100))
    repeat = args.repeat or (5 if args.quick else 20)
    batch = args.writes or (50 if args.quick else 200)
    print(f"Kombo console bench, target p95 <= {TARGET_MS:.0f} ms per page; {load()}")

    ok = True
    for database in [name.strip() for name in args.databases.split(",") if name.strip()]:
        if database == "sqlite" and args.sqlite_file:
            ok = run("sqlite", f"sqlite:///{Path(args.sqlite_file).resolve()}", volume, repeat, batch) and ok
        elif database == "sqlite":
            with tempfile.TemporaryDirectory(prefix="kombo-console-bench-") as folder:
                ok = run("sqlite", f"sqlite:///{folder}/state.db", volume, repeat, batch) and ok
        elif database == "postgresql":
            with scratch_database(args.pg_admin_url, "kombo_console_bench") as url:
                print(
                    f"\n(PostgreSQL database {sa.make_url(url).database} created for this run, dropped at its end)"
                )
                ok = run("postgresql", url, volume, repeat, batch) and ok
        else:
            parser.error(f"unknown database {database!r}")
    print(f"\nevery page p95 <= {TARGET_MS:.0f} ms: {'yes' if ok else 'NO'}; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
