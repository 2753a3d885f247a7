"""`bench/console.py --quick` runs to the end on both databases and prints its figures (the timings themselves
are the benchmark's business, not a test's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import KOMBO_TEST_PG_URL_DEFAULT

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("overview", "funnel 30 days", "dead letters", "order by invitation id", "webhook log", "run history",
         "erasures", "overview CSV")  # fmt: skip

pytestmark = [pytest.mark.slow]


def _postgres_url() -> str | None:
    from kombo_sync.connections import normalize_url

    url = normalize_url(os.environ.get("KOMBO_TEST_PG_URL") or KOMBO_TEST_PG_URL_DEFAULT)
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception:
        if os.environ.get("CI", "").lower() == "true":
            raise
        return None
    return url


def test_console_bench_quick_prints_every_page_on_both_databases() -> None:
    url = _postgres_url()
    databases = ["sqlite", "postgresql"] if url else ["sqlite"]
    args = [sys.executable, str(ROOT / "bench" / "console.py"), "--quick", "--orders", "5000", "--repeat", "2",
            "--databases", ",".join(databases)]  # fmt: skip
    if url:
        args += ["--pg-admin-url", url]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.count("== ") == len(databases) and "5,000 orders" in out
    for database in databases:
        section = out.split(f"== {database}:", 1)[1].split("\n== ", 1)[0]
        for page in PAGES:
            assert re.search(rf"^{re.escape(page)}(\s+[\d.]+){{6}}", section, re.M), (
                database,
                page,
                section,
            )
        assert re.search(r"writers: \d+ order inserts \+ claims.*ratio [\d.]+", section), section
    assert re.search(r"every page p95 <= 300 ms: (yes|NO); load average [\d.]+ [\d.]+ [\d.]+", out)
    if url:  # the bench drops the database it created
        [name] = re.findall(r"PostgreSQL database (kombo_console_bench_\w+) created", out)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
            )
            assert left.scalar_one() == 0
        engine.dispose()
