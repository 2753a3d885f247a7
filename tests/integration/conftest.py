"""Fixtures for the integration tests. Each owner keeps its fixtures in its own clearly marked block."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kombo_sync.kombo.client import KomboClient
from kombo_sync.state.store import StateStore
from sandbox import warehouse

# ---------------------------------------------------------------------------------------------------------
# Sandbox fixtures (owned by sandbox/): the local Kombo, the platform stand-in and a webhook receiver, each a
# real HTTP server on a free port. One server per test module; every test starts from a reset state.
# ---------------------------------------------------------------------------------------------------------
from sandbox.kombo_app import KomboSandboxSettings
from sandbox.platform_app import PlatformSettings
from sandbox.smtp import SmtpSandbox, run_in_thread
from sandbox.testing import (
    KomboSandbox,
    PlatformStandin,
    WebhookRecorder,
    run_kombo_sandbox,
    run_platform_standin,
)
from tests.integration.writeback_helpers import fast_client

SANDBOX_API_KEY = "sandbox-test-key"
SANDBOX_WEBHOOK_SECRET = "sandbox-test-webhook-secret"
PLATFORM_API_KEY = "platform-test-key"


@pytest.fixture(scope="module")
def _kombo_sandbox_server() -> Iterator[KomboSandbox]:
    server = run_kombo_sandbox(
        KomboSandboxSettings(api_key=SANDBOX_API_KEY, webhook_secret=SANDBOX_WEBHOOK_SECRET)
    )
    yield server
    server.stop()


@pytest.fixture
def kombo_sandbox(_kombo_sandbox_server: KomboSandbox) -> Iterator[KomboSandbox]:
    """The Kombo sandbox, freshly reset: `.url`, `.api_url` (`.../v1`), `.api_key`, `.admin` (SandboxAdmin),
    `.set_webhook(url, secret=None)`, `.webhook_secret`, `.headers(integration_id)`, `.client(integration_id)`.
    No webhook URL is set until a test sets one."""
    _kombo_sandbox_server.admin.reset()
    yield _kombo_sandbox_server


@pytest.fixture(scope="module")
def _platform_standin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformStandin]:
    warehouse_file = tmp_path_factory.mktemp("platform") / "warehouse.db"
    server = run_platform_standin(
        settings=PlatformSettings(warehouse_url=f"sqlite:///{warehouse_file}", api_key=PLATFORM_API_KEY)
    )
    yield server
    server.stop()


@pytest.fixture
def platform_standin(_platform_standin_server: PlatformStandin) -> Iterator[PlatformStandin]:
    """The platform stand-in with an empty warehouse and no invitations: `.url`, `.warehouse_url` (a tmp SQLite
    file), `.api_key` (bearer token for /api/*), `.headers()`, `.admin` (PlatformAdmin)."""
    _platform_standin_server.admin.reset()
    yield _platform_standin_server


@pytest.fixture(scope="module")
def _webhook_recorder_server() -> Iterator[WebhookRecorder]:
    server = WebhookRecorder().start()
    yield server
    server.stop()


@pytest.fixture
def webhook_recorder(_webhook_recorder_server: WebhookRecorder) -> Iterator[WebhookRecorder]:
    """A receiver that records raw webhook requests (`.received`) and answers 200 unless told otherwise
    (`.respond_with(status, json)`); its endpoint is `.webhook_url`."""
    _webhook_recorder_server.clear()
    yield _webhook_recorder_server


# End of the sandbox fixtures.


# ---------------------------------------------------------------------------------------------------------
# Intake fixtures (owned by the intake tests; their helpers are in tests/integration/intake_helpers.py).
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpSandbox]:
    """A local SMTP server (aiosmtpd) that records every accepted message under tmp_path/mailbox."""
    server = run_in_thread(tmp_path / "mailbox")
    yield server
    server.stop()


# End of the intake fixtures.


# ---------------------------------------------------------------------------------------------------------
# Write-back fixtures (owned by the write-back tests; their helpers are in tests/integration/writeback_helpers.py).
# The warehouse runs on the same engine as the test's state store: a SQLite file, or a PostgreSQL database of
# its own (created once per module, emptied before every test).
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _pg_warehouse_url(request: pytest.FixtureRequest) -> Iterator[str]:
    admin_url = request.getfixturevalue("pg_admin_url")
    name = f"kombo_wh_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def warehouse_engine(
    request: pytest.FixtureRequest, state_store: StateStore, tmp_path: Any
) -> Iterator[sa.Engine]:
    """An empty `assessment_results` warehouse on the state store's kind of database."""
    if state_store.dialect == "postgresql":
        url = request.getfixturevalue("_pg_warehouse_url")
    else:
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = warehouse.create_schema(url)
    warehouse.truncate_results(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fast_kombo_client(kombo_sandbox: Any) -> Iterator[KomboClient]:
    """`writeback_helpers.fast_client` on the Kombo sandbox, closed after the test."""
    with fast_client(kombo_sandbox) as client:
        yield client


# End of the write-back fixtures.
