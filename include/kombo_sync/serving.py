"""Which orders the provider serves: one answer for the webhook (which rejects with 422) and the intake
(which closes a polled order as ``rejected`` instead of inviting). Messages are for the recruiter: they never
name the candidate."""

from __future__ import annotations

from typing import Any

from kombo_sync.state.integrations import ACTIVE, DELETED, IntegrationRecord


def published_package_ids(integration: IntegrationRecord | None) -> frozenset[str] | None:
    """The package ids last published for the integration, or None while not known.

    The catalog sync records them with every successful publish (`IntegrationRecord.published_package_ids`);
    for an integration it has not published since, an admin's `settings["published_package_ids"]` is used.
    """
    if integration is None:
        return None
    value: Any = getattr(integration, "published_package_ids", None)
    if value is None and isinstance(integration.settings, dict):
        value = integration.settings.get("published_package_ids")
    if not isinstance(value, list | tuple | set | frozenset):
        return None
    return frozenset(str(item) for item in value)


def integration_refusal(record: IntegrationRecord | None) -> str | None:
    """Why orders of this integration are not served (unknown, deleted, switched off, not active), or None."""
    if record is None:
        return (
            "This ATS connection is not known to the assessment provider yet, so the order cannot be "
            "processed. Please ask your administrator to check the assessment integration, then order again."
        )
    if record.status == DELETED or record.deleted_at is not None:
        return (
            "This ATS connection to the assessment provider has been removed, so no new assessments can be "
            "ordered through it. Please ask your administrator to reconnect the integration."
        )
    if not record.enabled:
        return (
            "Assessments are currently switched off for this ATS connection. Please contact the assessment "
            "provider's support team to have them switched on again."
        )
    if record.status != ACTIVE:
        return (
            "This ATS connection to the assessment provider is not active at the moment (its status is "
            f"{record.status}). Please ask your administrator to reconnect the integration, then order again."
        )
    return None


def package_refusal(package_id: str, allowed: frozenset[str] | None) -> str | None:
    """Why this package is not served for the customer (not in its published list), or None; while the
    published list is not known, every package is served."""
    if allowed is None or package_id in allowed:
        return None
    return (
        f"The assessment package '{package_id}' is not available for your account. Please choose one "
        "of the assessments offered in your ATS, or contact the assessment provider to add this one."
    )
