"""Pipeline settings: one YAML file the team owns (`include/config/pipeline.yaml` by default).

The file is read at task run time, never at DAG parse time. `KOMBO_SYNC_CONFIG` points at another file.
Every key has a default, so an empty file is a valid configuration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kombo_sync.storable import read_yaml_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "pipeline.yaml"


# Durations longer than this are typos, and would overflow the dates computed from them.
TEN_YEARS_SECONDS = 10 * 366 * 24 * 3600
TEN_YEARS_MINUTES = TEN_YEARS_SECONDS // 60
TEN_YEARS_HOURS = TEN_YEARS_MINUTES // 60


class SettingsError(ValueError):
    """The settings file cannot be used; the message names the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CatalogSettings(_Section):
    source: Literal["sql", "yaml"] = "sql"
    sql_file: str = "include/sql/catalog.sql"
    yaml_file: str = "include/config/catalog.yaml"
    # Share of an integration's published packages that may disappear in one run without `allow_shrink`.
    max_shrink_share: float = Field(default=0.5, ge=0, le=1)
    # At most this many integrations per mapped publish task (one shard); the shard size grows when there would
    # be more shards than Airflow's max_map_length (1024).
    shard_size: int = Field(default=500, ge=1)
    # A run is split into up to 4 parallel shards only when each gets at least this many integrations: a task
    # start costs about 2 s, which 16 threads at 100 ms per PUT spend publishing about 300 integrations.
    min_shard_size: int = Field(default=250, ge=1)
    # A run that is one shard is published by the plan task itself (no publish task to start, about 2 s saved).
    publish_in_plan: bool = True
    # Threads per shard sending PUTs concurrently (the client keeps Kombo's rate and in-flight limits).
    publish_concurrency: int = Field(default=16, ge=1)
    # Bad catalog rows stored in the quarantine table per run (all are counted and reported).
    max_quarantine_rows: int = Field(default=1000, ge=0)


class IntegrationOverrides(_Section):
    channel: Literal["platform", "email"] | None = None
    duplicate_rule: bool | None = None


class IntakeSettings(_Section):
    channel: Literal["platform", "email"] = "platform"
    platform_conn_id: str = "kombo_platform"
    smtp_conn_id: str = "kombo_smtp"
    # Where a candidate starts the assessment when the channel is e-mail ({order_id}, {package_id},
    # {integration_id} are filled in).
    assessment_url_template: str = "https://assessments.provider.example/start/{order_id}"
    templates_dir: str = "include/templates"
    # Orders created this long before the data interval are polled again, so late-listed orders are seen.
    overlap_minutes: int = Field(default=15, ge=0, le=TEN_YEARS_MINUTES)
    # Runs without a data interval (manual without a logical date, woken by the webhook) poll this far back.
    lookback_minutes: int = Field(default=60, ge=1, le=TEN_YEARS_MINUTES)
    # A scheduled run after missed runs polls back to the last successful run's interval, at most this far.
    max_gap_hours: int = Field(default=72, ge=1, le=TEN_YEARS_HOURS)
    page_size: int = Field(default=250, ge=1, le=250)
    # A claim is a lease: a worker that dies holding it gives the order back after this long.
    lease_seconds: int = Field(default=300, ge=10, le=TEN_YEARS_SECONDS)
    # Orders claimed at once; each batch is re-checked with Kombo (GET ?ids=) right before sending.
    claim_batch_size: int = Field(default=500, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    # Delay before retry n is retry_backoff_seconds * 2**(n-1), at most retry_backoff_max_seconds.
    retry_backoff_seconds: int = Field(default=60, ge=0, le=TEN_YEARS_SECONDS)
    retry_backoff_max_seconds: int = Field(default=3600, ge=0, le=TEN_YEARS_SECONDS)
    duplicate_rule: bool = True
    # Concurrent integrations polled per task (each keeps Kombo's in-flight cap).
    poll_concurrency: int = Field(default=32, ge=1)
    send_concurrency: int = Field(default=16, ge=1)
    # Package names for the e-mail when Kombo's copy of the catalog (GET /assessment/packages) lacks one.
    package_names: dict[str, str] = Field(default_factory=dict)
    integrations: dict[str, IntegrationOverrides] = Field(default_factory=dict)

    def channel_for(self, integration_id: str, registry_channel: str | None = None) -> str:
        override = self.integrations.get(integration_id)
        if override and override.channel:
            return override.channel
        return registry_channel or self.channel


class WritebackSettings(_Section):
    # The team's completed-results query (column contract in docs/writeback.md), run on the warehouse.
    sql_file: str = "include/sql/results.sql"
    # Rows updated this long before the data interval are read again, so late-committed rows are not skipped.
    overlap_minutes: int = Field(default=60, ge=0, le=TEN_YEARS_MINUTES)
    # A scheduled run after missed or failed runs reads back to the last successful one, at most this far.
    max_gap_hours: float = Field(default=168, gt=0, le=TEN_YEARS_HOURS)
    # What a manual run without dates or order ids reads: the last this many hours, up to now.
    manual_lookback_hours: float = Field(default=24, gt=0, le=TEN_YEARS_HOURS)
    # Warehouse rows read, mapped and enqueued at a time: memory grows with this, never with the backlog.
    chunk_rows: int = Field(default=5000, ge=1)
    # PUTs in flight at once (coroutines, or threads with send_with: threads); the client still caps each
    # integration at Kombo's 30 in flight.
    max_concurrency: int = Field(default=64, ge=1)
    # How the sender sends: "asyncio" (one event loop, aiohttp: a third of the CPU per result) or "threads"
    # (httpx in max_concurrency threads). Same limits, retries and outcomes either way.
    send_with: Literal["asyncio", "threads"] = "asyncio"
    # Outbox rows claimed per batch by the sender (and lease length, after which a dead worker's rows return).
    claim_batch_rows: int = Field(default=500, ge=1)
    lease_seconds: int = Field(default=300, ge=10, le=TEN_YEARS_SECONDS)
    # Transient failures (after the client's own retries) before a result becomes a dead letter.
    max_attempts: int = Field(default=8, ge=1)
    retry_backoff_seconds: int = Field(default=60, ge=0, le=TEN_YEARS_SECONDS)
    # Reports larger than this are sent as a link (data_url) or, without one, quarantined.
    max_attachment_bytes: int = Field(default=5_000_000, ge=1)
    # Fetch non-HTTPS report URLs (e.g. an internal file server) and send their bytes instead of a link.
    fetch_report_urls: bool = False
    # Stop claiming new results after this many seconds (None: drain the outbox); the rest waits for the next run.
    max_send_seconds: float | None = Field(default=None, gt=0, le=TEN_YEARS_SECONDS)
    # Hosts whose plain http:// result and report URLs are accepted (a local platform stand-in); everything else
    # must be https://, since recruiters open these links and Kombo downloads reports without credentials.
    insecure_url_hosts: list[str] = Field(default_factory=list)
    # Payloads printed by a dry run (the count and the hashes of the rest are still reported).
    dry_run_preview_rows: int = Field(default=20, ge=0)


class ReconcileSettings(_Section):
    # Invited orders read from the state store and checked with Kombo per page (Kombo is asked 100 ids a call).
    page_size: int = Field(default=500, ge=1)
    # Integrations whose orders are read from Kombo at once (each keeps Kombo's in-flight cap).
    read_concurrency: int = Field(default=8, ge=1)
    # A progress line at most this often on long runs.
    progress_seconds: float = Field(default=30.0, gt=0)


class WebhookSettings(_Section):
    secret_conn_id: str = "kombo_webhook"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Dotted path of a callable(order, context) -> str | None returning a rejection message.
    extra_rejection_rule: str | None = None
    # Inline flow: how long the webhook waits for the platform to create the invitation before answering 503
    # (Kombo then keeps the order; ATSs give up after 15-30 s).
    inline_timeout_seconds: float = Field(default=8.0, gt=0, le=25)


class EmailAlertChannel(_Section):
    # An SMTP connection read like the invitation channel's (host, port, login/password, extras from_email,
    # ssl, starttls, disable_tls, timeout); e-mail alerts are off while `to` is empty.
    conn_id: str = "kombo_smtp"
    to: list[str] = Field(default_factory=list)
    # Sender of the alerts (default: the connection's extra `from_email`).
    from_email: str | None = None
    subject_prefix: str = "[kombo-sync]"


class WebhookAlertChannel(_Section):
    # An HTTP connection whose host is the full URL (Slack/Teams incoming webhook, or any JSON receiver);
    # webhook alerts are off while it is None. The password, when set, is sent as a bearer token.
    conn_id: str | None = None
    # The message's field (Slack, Mattermost, Rocket.Chat and Teams' legacy connectors read `text`).
    text_field: str = "text"
    # Fixed fields added to every payload (e.g. Slack's `username`, `icon_emoji`).
    extra_payload: dict[str, Any] = Field(default_factory=dict)
    # Add `kombo_alert` (kind, counts, ids) for receivers that route on structured fields.
    include_details: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class AlertChannels(_Section):
    email: EmailAlertChannel = Field(default_factory=EmailAlertChannel)
    webhook: WebhookAlertChannel = Field(default_factory=WebhookAlertChannel)


class AlertThresholds(_Section):
    # An order still received/inviting this long after it was recorded.
    order_not_invited_minutes: int = Field(default=30, ge=1, le=TEN_YEARS_MINUTES)
    # An integration whose poll (intake) or package publish (catalog) failed in this many runs in a row.
    integration_failing_runs: int = Field(default=3, ge=1)


class AlertKinds(_Section):
    failed_run: bool = True
    dead_letter: bool = True
    order_not_invited: bool = True
    integration_failing: bool = True
    quarantined_row: bool = True

    def is_on(self, kind: str) -> bool:
        return bool(getattr(self, kind, False))


class AlertSettings(_Section):
    channels: AlertChannels = Field(default_factory=AlertChannels)
    thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    kinds: AlertKinds = Field(default_factory=AlertKinds)
    # A condition that still holds is sent again after this long (0: once, until it clears and comes back).
    repeat_minutes: int = Field(default=1440, ge=0, le=TEN_YEARS_MINUTES)
    # Ids listed per alert; the rest are counted ("and 40 more").
    max_ids_per_alert: int = Field(default=20, ge=1, le=500)
    # Base of the links to runs in failed-run alerts (default: Airflow's [api] base_url).
    airflow_base_url: str | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one channel is configured."""
        return bool(self.channels.email.to) or bool(self.channels.webhook.conn_id)


class RetentionSettings(_Section):
    # Candidate e-mail, names and phone are erased this long after the order ended (closed without an invitation,
    # or its result written back); ids and the salted e-mail hash stay. 0: erased at the next housekeeping run.
    candidate_data_days: int = Field(default=90, ge=0)
    # A deleted integration's candidate data is erased this long after Kombo's integration-deleted webhook,
    # whatever its orders' state.
    integration_deleted_days: int = Field(default=30, ge=0)
    # Airflow connection whose password is the secret salt of the e-mail hashes (else KOMBO_ERASURE_SALT).
    salt_conn_id: str = "kombo_erasure_salt"
    # Orders erased per transaction (and per `erasures` record).
    batch_size: int = Field(default=500, ge=1, le=5000)


# Reminders after the invitation and expiry (docs/lifecycle.md). Days may be fractions (0.5 = 12 hours).
_Days = Annotated[float, Field(gt=0, le=3660)]


class LifecycleOverrides(_Section):
    # None: inherit; [] switches reminders off for this integration or package.
    reminder_days: list[_Days] | None = None
    # None: inherit; 0 switches expiry off for this integration or package.
    expiry_days: float | None = Field(default=None, ge=0, le=3660)


class LifecycleSettings(_Section):
    # Days after the invitation at which a candidate without a result is reminded; [] or `reminders: false`: off.
    reminders: bool = True
    reminder_days: list[_Days] = Field(default_factory=lambda: [2.0, 5.0])
    # Days after the invitation without a result after which the order expires (written back CANCELLED, the
    # invitation revoked); 0: orders never expire.
    expiry_days: float = Field(default=14.0, ge=0, le=3660)
    # Overrides by package id and by integration id (the package's wins, then the integration's, then these).
    packages: dict[str, LifecycleOverrides] = Field(default_factory=dict)
    integrations: dict[str, LifecycleOverrides] = Field(default_factory=dict)
    # The result written back for an expired order needs a URL: the invitation's link, else this.
    expiry_result_url: str | None = None
    # A reminder's claim is a lease, like an invitation's.
    lease_seconds: int = Field(default=300, ge=10, le=TEN_YEARS_SECONDS)
    # Invited orders read from the state store per page.
    page_size: int = Field(default=500, ge=1)
    send_concurrency: int = Field(default=8, ge=1)
    # A reminder the channel could not take is tried again after this long (doubling), at most max_attempts.
    retry_backoff_seconds: int = Field(default=300, ge=0, le=TEN_YEARS_SECONDS)
    max_attempts: int = Field(default=5, ge=1)


class PipelineSettings(_Section):
    kombo_conn_id: str = "kombo_default"
    state_conn_id: str = "kombo_state"
    warehouse_conn_id: str = "kombo_warehouse"
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)

    def resolve_path(self, relative: str) -> Path:
        """Paths in the file are relative to the project root unless absolute."""
        path = Path(relative)
        return path if path.is_absolute() else PROJECT_ROOT / path


def config_path() -> Path:
    return Path(os.environ.get("KOMBO_SYNC_CONFIG", DEFAULT_CONFIG_PATH))


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> PipelineSettings:
    file = Path(path)
    try:
        raw: Any = read_yaml_file(file) if file.exists() else None
    except ValueError as exc:
        raise SettingsError(f"settings file {file}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(
            f"settings file {file}: the top level must be a mapping of sections "
            f"(catalog, intake, writeback, reconcile, webhook, alerts, retention, lifecycle), not {type(raw).__name__}"
        )
    try:
        return PipelineSettings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()[:10]
        ]
        more = exc.error_count() - len(problems)
        suffix = f" (and {more} more)" if more > 0 else ""
        raise SettingsError(f"settings file {file}: " + "; ".join(problems) + suffix) from None


def load_settings(path: Path | None = None) -> PipelineSettings:
    """Read and validate the settings file (cached until the file changes)."""
    path = path or config_path()
    mtime = path.stat().st_mtime if path.exists() else 0.0
    return _load(str(path), mtime)
