"""Helpers shared by the intake tests (no tests here): settings, the registry, and one call that runs an intake
cycle (poll, then dispatch) the way the DAG does. Their fixture (`smtp_server`) is in tests/integration/conftest.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kombo_sync.intake import dispatch_invitations, poll_orders
from kombo_sync.intake.window import KIND_INTERVAL, PollWindow
from kombo_sync.invites import Inviters
from kombo_sync.invites.base import Inviter
from kombo_sync.invites.email import EmailInviter, InvitationTemplates
from kombo_sync.invites.platform import PlatformInviter
from kombo_sync.kombo.client import KomboClient
from kombo_sync.settings import DEFAULT_CONFIG_PATH, PipelineSettings, load_settings
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.store import StateStore
from sandbox.smtp import SmtpSandbox

TEMPLATES_DIR = load_settings(DEFAULT_CONFIG_PATH).resolve_path("include/templates")
FROM_EMAIL = "assessments@provider.example.com"
URL_TEMPLATE = "https://assessments.provider.example/start/{order_id}"


def make_settings(**intake: Any) -> PipelineSettings:
    """Settings for tests: no backoff, small batches, anything else as given."""
    values: dict[str, Any] = {
        "retry_backoff_seconds": 0,
        "claim_batch_size": 50,
        "poll_concurrency": 8,
        "send_concurrency": 8,
        "templates_dir": str(TEMPLATES_DIR),
        "assessment_url_template": URL_TEMPLATE,
    }
    values.update(intake)
    return PipelineSettings.model_validate({"intake": values})


def intake_kombo_client(sandbox: Any) -> KomboClient:
    """A client on the Kombo sandbox with the intake tests' short retries (2, backoff capped at 50 ms)."""
    return KomboClient(
        sandbox.api_url, sandbox.api_key, max_retries=2, backoff_base=0.01, backoff_cap=0.05, timeout=10
    )


def platform_inviter(platform: Any) -> PlatformInviter:
    return PlatformInviter(platform.url, platform.api_key, timeout=10)


def email_inviter(smtp: SmtpSandbox, settings: PipelineSettings | None = None) -> EmailInviter:
    settings = settings or make_settings()
    return EmailInviter(
        smtp.host,
        smtp.port,
        FROM_EMAIL,
        templates=InvitationTemplates(TEMPLATES_DIR),
        url_template=settings.intake.assessment_url_template,
        from_name="Provider Assessments",
        starttls="never",
        timeout=10,
    )


def inviters(settings: PipelineSettings, **prebuilt: Inviter) -> Inviters:
    def refuse(channel: str, _settings: PipelineSettings) -> Inviter:
        raise AssertionError(f"test did not provide channel {channel}")

    return Inviters(settings, prebuilt=prebuilt, factory=refuse)


def register(
    store: StateStore,
    sandbox: Any,
    count: int = 1,
    *,
    tool: str = "workday",
    channel: str | None = None,
    settings: dict[str, Any] | None = None,
) -> list[str]:
    """Integrations in the sandbox and in the pipeline's registry (as the webhook or bootstrap would)."""
    registry = IntegrationRepository(store)
    ids = []
    for n in range(count):
        created = sandbox.admin.create_integration(
            tool, organization_name=f"Customer {n}", origin_id=f"cust-{n}"
        )
        integration_id = created["integration"]["id"] if "integration" in created else created["id"]
        registry.upsert(integration_id, source="admin", tool=tool, customer_key=f"cust-{n}")
        if channel is not None:
            registry.set_invitation_channel(integration_id, channel)
        if settings is not None:
            registry.set_settings(integration_id, settings)
        ids.append(integration_id)
    return ids


def new_order(
    sandbox: Any, integration_id: str, package_id: str = "py-basics", **kwargs: Any
) -> dict[str, Any]:
    """Create one order in the sandbox (as a recruiter would) and return it (the sandbox's admin view)."""
    created = sandbox.admin.create_order(integration_id, package_id, **kwargs)
    order = dict(created.get("order", created))
    order.pop("webhook", None)
    return order


def window(minutes: int = 60) -> PollWindow:
    now = datetime.now(UTC)
    return PollWindow(created_after=now - timedelta(minutes=minutes), until=now, kind=KIND_INTERVAL)


def run_cycle(
    store: StateStore,
    client: KomboClient,
    invite_with: Inviters,
    settings: PipelineSettings,
    *,
    poll_window: PollWindow | None = None,
    owner: str | None = None,
    **dispatch_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One intake cycle: the DAG's poll task, then its dispatch task."""
    polled = poll_orders(store, client, settings, poll_window or window())
    dispatched = dispatch_invitations(store, client, invite_with, settings, owner=owner, **dispatch_kwargs)
    return polled, dispatched


def platform_creations(platform: Any) -> dict[str, int]:
    """Order id -> invitations the platform created for it (more than 1 would be a duplicate)."""
    return dict(platform.admin.invitations()["creations_by_order"])


def order_states(store: StateStore) -> dict[str, str]:
    import sqlalchemy as sa

    from kombo_sync.state.schema import orders

    with store.transaction(readonly=True) as conn:
        return dict(conn.execute(sa.select(orders.c.id, orders.c.state)).all())


def invitation_rows(store: StateStore) -> dict[str, dict[str, Any]]:
    import sqlalchemy as sa

    from kombo_sync.state.schema import invitations

    with store.transaction(readonly=True) as conn:
        return {row["order_id"]: dict(row) for row in conn.execute(sa.select(invitations)).mappings()}
