"""`check_and_alert`: evaluate the state-based conditions and send one alert per kind with what is new.

Called from the DAGs' report tasks. It never raises: a condition that cannot be read or an alert that no channel
took is logged (ids and error types only) and reported in the returned summary, and an undelivered alert is
tried again by the next check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kombo_sync.alerts.channels import AlertChannel, build_channels, deliver, delivered
from kombo_sync.alerts.conditions import CONDITIONS, Finding
from kombo_sync.alerts.ledger import AlertLedger, Claim
from kombo_sync.alerts.messages import (
    DEAD_LETTER,
    FAILED_RUN,
    INTEGRATION_FAILING,
    ORDER_NOT_INVITED,
    QUARANTINED_ROW,
    Alert,
    bullet_lines,
    plural,
)
from kombo_sync.settings import AlertSettings, PipelineSettings
from kombo_sync.state.store import StateStore

log = logging.getLogger(__name__)

# Failed-run entries are one-off events: their ledger rows are dropped after this long.
FAILED_RUN_MEMORY = timedelta(days=30)
# Subjects read per kind and check, so a huge backlog (a million dead letters) costs a bounded query; beyond it
# the alert says "more than", and the newest subjects are the ones tracked.
MAX_SUBJECTS_PER_KIND = 5000

_NOUNS: dict[str, tuple[str, str]] = {
    DEAD_LETTER: ("dead letter", "dead letters"),
    ORDER_NOT_INVITED: ("order not invited", "orders not invited"),
    INTEGRATION_FAILING: ("integration failing", "integrations failing"),
    QUARANTINED_ROW: ("quarantined row", "quarantined rows"),
}

ACTIONS: dict[str, str] = {
    DEAD_LETTER: (
        "Kombo refused these results for good, so they are not retried. Open each log link (or look the code up "
        "in docs/writeback.md), fix the cause (results query or warehouse data, package, integration state), "
        "then replay them: trigger kombo_result_writeback with order_ids set to these ids, or with "
        "replay_dead_letters=true. not_writable results belong to orders closed in the ATS: nothing to replay."
    ),
    ORDER_NOT_INVITED: (
        "These candidates have no invitation yet. Read the dispatch task log of kombo_order_intake for these "
        "order ids (channel errors, retries waiting) and check the invitation channel's connection "
        "(kombo_platform or kombo_smtp). An order is retried with backoff and becomes failed after "
        "intake.max_attempts; see docs/intake.md."
    ),
    INTEGRATION_FAILING: (
        "Read the failed task's log in the job's DAG (intake.poll: kombo_order_intake, catalog: "
        "kombo_package_sync) and the Kombo log link. Check the integration in Kombo's dashboard (deleted, "
        "inactive, credentials revoked); if it is gone, disable it in the registry so runs stop failing on it."
    ),
    QUARANTINED_ROW: (
        "Rows a job could not use wait in the state store's quarantine table with their reason (the row itself "
        "is kept there, not in this message). Review them by id, fix the source (results query, catalog, order "
        "data) and mark them resolved; the next run picks fixed rows up again."
    ),
}


def _context(kind: str, settings: AlertSettings) -> str:
    if kind == DEAD_LETTER:
        return "in the result write-back"
    if kind == ORDER_NOT_INVITED:
        return f"{settings.thresholds.order_not_invited_minutes} min after they arrived"
    if kind == INTEGRATION_FAILING:
        return f"{settings.thresholds.integration_failing_runs} run(s) in a row"
    return "awaiting review"


def compose(
    kind: str, findings: Sequence[Finding], claim: Claim, settings: AlertSettings, *, more: bool = False
) -> Alert:
    """The alert for the subjects this check claimed (new first, then reminders), with totals."""
    by_subject = {finding.subject: finding for finding in findings}
    new = [by_subject[subject] for subject in claim.new if subject in by_subject]
    repeated = [by_subject[subject] for subject in claim.repeated if subject in by_subject]
    singular, plural_noun = _NOUNS[kind]
    count = len(new) + len(repeated)
    parts = [f"{len(new)} new"] if new else []
    if repeated:
        parts.append(f"{len(repeated)} still open")
    title = f"{' and '.join(parts)} {singular if count == 1 else plural_noun} {_context(kind, settings)}"
    limit = settings.max_ids_per_alert
    items = [finding.line for finding in new] + [f"{finding.line} (reminder)" for finding in repeated]
    lines = list(bullet_lines(items, count, limit))
    groups: dict[str, int] = {}
    for finding in new + repeated:
        if finding.group:
            groups[finding.group] = groups.get(finding.group, 0) + 1
    if len(groups) > 1:
        lines.append(
            "By " + _group_label(kind) + ": " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
        )
    total = plural(len(findings), singular, plural_noun)
    lines.append(f"Open in total: {'more than ' if more else ''}{total}.")
    return Alert(
        kind=kind,
        title=title,
        lines=tuple(lines),
        action=ACTIONS[kind],
        ids=tuple(finding.ref for finding in new + repeated),
        counts={"new": len(new), "repeated": len(repeated), "open": len(findings)},
    )


def _group_label(kind: str) -> str:
    return {DEAD_LETTER: "code", ORDER_NOT_INVITED: "integration", INTEGRATION_FAILING: "job"}.get(
        kind, "job"
    )


def repeat_interval(settings: AlertSettings) -> timedelta | None:
    """How long before a condition that still holds is sent again (None: never)."""
    return timedelta(minutes=settings.repeat_minutes) if settings.repeat_minutes else None


def check_and_alert(
    store: StateStore,
    settings: PipelineSettings,
    *,
    now: datetime,
    channels: Sequence[AlertChannel] | None = None,
    max_subjects: int = MAX_SUBJECTS_PER_KIND,
) -> dict[str, Any]:
    """Evaluate every enabled state-based condition and send one alert per kind for the subjects that are new
    (or due again after `repeat_minutes`). Returns `{"enabled", "channels", "kinds": {kind: counts}}`.
    Never raises."""
    alerts = settings.alerts
    summary: dict[str, Any] = {"enabled": alerts.enabled, "kinds": {}}
    if not alerts.enabled:
        return summary
    # Wall-clock time is meant here (how long an order has waited), not a run's data interval.
    now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if channels is None:
        try:
            channels = build_channels(alerts)
        except Exception as exc:  # build_channels logs its own problems; this is the last guard
            log.error("alerts: channels could not be built (%s)", type(exc).__name__)
            channels = []
    summary["channels"] = [f"{channel.name}:{getattr(channel, 'conn_id', '?')}" for channel in channels]
    if not channels:
        log.error("alerts: no usable channel (see the errors above); nothing checked")
        return summary
    ledger = AlertLedger(store)
    repeat = repeat_interval(alerts)
    for kind, condition in CONDITIONS.items():
        if not alerts.kinds.is_on(kind):
            continue
        try:
            summary["kinds"][kind] = _check_kind(
                kind, condition, store, alerts, ledger, channels, now, repeat, max_subjects
            )
        except Exception as exc:
            log.error("alerts: %s not checked (%s)", kind, type(exc).__name__)
            log.debug("alerts: %s check failed", kind, exc_info=True)
            summary["kinds"][kind] = {"error": type(exc).__name__}
    try:
        ledger.forget_older_than(FAILED_RUN, now - FAILED_RUN_MEMORY)
    except Exception as exc:
        log.warning("alerts: old failed-run entries not pruned (%s)", type(exc).__name__)
    sent = {
        kind: result.get("alerted", 0) for kind, result in summary["kinds"].items() if result.get("alerted")
    }
    log.info("alerts checked: %s", sent or "nothing new")
    return summary


def _check_kind(
    kind: str,
    condition: Any,
    store: StateStore,
    alerts: AlertSettings,
    ledger: AlertLedger,
    channels: Sequence[AlertChannel],
    now: datetime,
    repeat: timedelta | None,
    max_subjects: int,
) -> dict[str, Any]:
    findings: list[Finding] = condition(store, alerts, now, max_subjects)
    more = len(findings) > max_subjects
    findings = findings[:max_subjects]
    subjects = [finding.subject for finding in findings]
    if not more:
        # Only a complete list tells which conditions cleared.
        ledger.clear_except(kind, subjects)
    claim = ledger.claim(kind, subjects, now=now, repeat=repeat)
    result: dict[str, Any] = {"open": len(findings), "alerted": 0}
    if more:
        result["more"] = True
    if not claim:
        return result
    alert = compose(kind, findings, claim, alerts, more=more)
    outcome = deliver(alert, channels)
    result["delivery"] = outcome
    if delivered(outcome):
        result.update(alerted=len(claim.subjects), new=len(claim.new), repeated=len(claim.repeated))
    else:
        ledger.release(claim)
    return result


def run_alert_checks(settings: PipelineSettings | None = None) -> dict[str, Any]:
    """`check_and_alert` for a report task: settings, state store and channels from the configuration, the
    current time. Never raises (a state store that cannot be opened is logged and reported)."""
    from kombo_sync.settings import load_settings

    try:
        settings = settings or load_settings()
        if not settings.alerts.enabled:
            return {"enabled": False, "kinds": {}}
        from kombo_sync.runtime import state_store

        store = state_store(settings)
    except Exception as exc:
        log.error("alerts: not checked, settings or state store unavailable (%s)", type(exc).__name__)
        return {"enabled": True, "kinds": {}, "error": type(exc).__name__}
    return check_and_alert(store, settings, now=datetime.now(UTC))
