"""Invitation channels: the provider's platform API (``platform``) and e-mail over SMTP (``email``).

``Inviters`` builds each channel once per task from its Airflow connection (``kombo_platform``,
``kombo_smtp``) and hands out the one configured for an integration (per-integration override in
``pipeline.yaml``, then the registry's ``invitation_channel``, then ``intake.channel``). ``Inviters.revoker``
hands out the channel that withdraws an invitation (the e-mail one needs no connection: it cannot), and
``Inviters.reminder`` the one that reminds a candidate (the same channel as the invitation's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from kombo_sync.invites.base import (
    CHANNEL_EMAIL,
    CHANNEL_PLATFORM,
    CHANNELS,
    InvitationError,
    InvitationOrder,
    InvitationRequest,
    InvitationResult,
    Inviter,
    PermanentInvitationError,
    Reminder,
    ReminderRequest,
    ReminderResult,
    RetriableInvitationError,
    RevocationResult,
    Revoker,
)
from kombo_sync.settings import PipelineSettings

__all__ = [
    "CHANNELS",
    "CHANNEL_EMAIL",
    "CHANNEL_PLATFORM",
    "InvitationError",
    "InvitationOrder",
    "InvitationRequest",
    "InvitationResult",
    "Inviter",
    "InviterConfigurationError",
    "Inviters",
    "PermanentInvitationError",
    "Reminder",
    "ReminderRequest",
    "ReminderResult",
    "RetriableInvitationError",
    "RevocationResult",
    "Revoker",
    "build_inviter",
]


class InviterConfigurationError(RuntimeError):
    """A channel's connection is missing or unusable: nothing can be sent through it until it is fixed."""


def build_inviter(channel: str, settings: PipelineSettings) -> Inviter:
    """The inviter for ``channel``, built from its Airflow connection (raises InviterConfigurationError)."""
    from kombo_sync.connections import get_connection

    intake = settings.intake
    if channel == CHANNEL_PLATFORM:
        from kombo_sync.invites.platform import PlatformInviter

        conn = get_connection(intake.platform_conn_id)
        if conn is None:
            raise InviterConfigurationError(
                f"channel 'platform' needs the Airflow connection '{intake.platform_conn_id}' "
                "(HTTP: host = invitation API base URL, password = token)"
            )
        try:
            # One connection per sender at least: the intake's senders share this inviter.
            return PlatformInviter.from_connection(conn, max_connections=max(32, intake.send_concurrency))
        except ValueError as exc:
            raise InviterConfigurationError(f"connection '{intake.platform_conn_id}': {exc}") from exc
    if channel == CHANNEL_EMAIL:
        from kombo_sync.invites.email import EmailInviter

        conn = get_connection(intake.smtp_conn_id)
        if conn is None:
            raise InviterConfigurationError(
                f"channel 'email' needs the Airflow connection '{intake.smtp_conn_id}' "
                "(SMTP: host, port, optional login/password, extra from_email)"
            )
        templates_dir = settings.resolve_path(intake.templates_dir)
        if not templates_dir.is_dir():
            raise InviterConfigurationError(f"invitation templates directory {templates_dir} does not exist")
        try:
            return EmailInviter.from_connection(
                conn, templates_dir=templates_dir, url_template=intake.assessment_url_template
            )
        except ValueError as exc:
            raise InviterConfigurationError(f"connection '{intake.smtp_conn_id}': {exc}") from exc
    raise InviterConfigurationError(f"unknown invitation channel {channel!r}; use one of {CHANNELS}")


class Inviters:
    """Channel name -> inviter, each built once on first use (thread-safe). Tests pass ready inviters."""

    def __init__(
        self,
        settings: PipelineSettings,
        prebuilt: Mapping[str, Inviter] | None = None,
        factory: Callable[[str, PipelineSettings], Inviter] = build_inviter,
    ) -> None:
        self.settings = settings
        self._inviters: dict[str, Inviter] = dict(prebuilt or {})
        self._factory = factory
        self._lock = threading.Lock()

    def get(self, channel: str) -> Inviter:
        with self._lock:
            inviter = self._inviters.get(channel)
            if inviter is None:
                inviter = self._inviters[channel] = self._factory(channel, self.settings)
            return inviter

    def revoker(self, channel: str | None) -> Revoker:
        """The channel that withdraws an invitation sent through ``channel`` (raises InviterConfigurationError
        when its connection is missing). E-mail is answered without a connection: it cannot take a message back."""
        if channel == CHANNEL_EMAIL:
            with self._lock:
                prebuilt = self._inviters.get(CHANNEL_EMAIL)
            if isinstance(prebuilt, Revoker):
                return prebuilt
            from kombo_sync.invites.email import EMAIL_REVOKER

            return EMAIL_REVOKER
        if channel not in CHANNELS:
            raise InviterConfigurationError(f"unknown invitation channel {channel!r}; use one of {CHANNELS}")
        inviter = self.get(channel)
        if not isinstance(inviter, Revoker):
            raise InviterConfigurationError(f"channel {channel!r} ({type(inviter).__name__}) cannot revoke")
        return inviter

    def reminder(self, channel: str | None) -> Reminder:
        """The channel that reminds a candidate invited through ``channel`` (raises InviterConfigurationError
        when its connection is missing or it cannot remind)."""
        if channel not in CHANNELS:
            raise InviterConfigurationError(f"unknown invitation channel {channel!r}; use one of {CHANNELS}")
        inviter = self.get(channel)
        if not isinstance(inviter, Reminder):
            raise InviterConfigurationError(f"channel {channel!r} ({type(inviter).__name__}) cannot remind")
        return inviter

    def channel_for(self, integration_id: str, registry_channel: str | None = None) -> str:
        return self.settings.intake.channel_for(integration_id, registry_channel)
