"""Fixtures for the integration tests. Each owner keeps its fixtures in its own clearly marked block."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# ---------------------------------------------------------------------------------------------------------
# Sandbox fixtures (owned by sandbox/): the local Kombo, the platform stand-in and a webhook receiver, each a
# real HTTP server on a free port. One server per test module; every test starts from a reset state.
# ---------------------------------------------------------------------------------------------------------
from sandbox.kombo_app import KomboSandboxSettings
from sandbox.platform_app import PlatformSettings
from sandbox.testing import (
    KomboSandbox,
    PlatformStandin,
    WebhookRecorder,
    run_kombo_sandbox,
    run_platform_standin,
)

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
