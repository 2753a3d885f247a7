"""What every invitation channel implements, and the errors it raises.

An inviter turns one claimed order into one invitation for its candidate. It is called with the Kombo order id
as idempotency key; a channel that can deduplicate (the platform API) must create at most one invitation per
key, a channel that cannot (SMTP) derives what it can from it (the ``Message-ID``). Errors are split the way
the dispatcher needs them: ``RetriableInvitationError`` (try again later, with backoff) and
``PermanentInvitationError`` (this order cannot be invited; retrying will not help). Neither ever carries the
candidate's e-mail, name or phone, so both are safe to log and to store as the order's reason.

A channel also answers ``revoke(order_id, reason)`` (``Revoker``) when an order leaves OPEN in the ATS: the
platform withdraws the invitation (idempotent: revoking twice is a clear answer, not an error); e-mail cannot
take a message back and answers ``not_revocable``. Transport failures raise the same two errors.

A channel also reminds a candidate who has not finished (``Reminder``): ``remind(request, idempotency_key)``
with the key ``<order id>:reminder:<number>``; the platform creates at most one reminder per key, the e-mail
channel derives the reminder's ``Message-ID`` from the order id and the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

CHANNEL_PLATFORM = "platform"
CHANNEL_EMAIL = "email"
CHANNELS = (CHANNEL_PLATFORM, CHANNEL_EMAIL)


@dataclass(frozen=True)
class InvitationResult:
    """What a channel answered: its own id for the invitation, the candidate's link, and the channel used."""

    external_id: str | None
    url: str | None
    channel: str


# What a revocation found (``RevocationResult.status``).
REVOKED = "revoked"  # this call withdrew the invitation
ALREADY_REVOKED = "already_revoked"  # an earlier call did (e.g. a run killed before it recorded the answer)
NOT_FOUND = "not_found"  # the channel holds no invitation for the order
FINISHED = "finished"  # the candidate already finished (completed or cancelled on the platform)
NOT_REVOCABLE = "not_revocable"  # the channel cannot take an invitation back (e-mail)
REVOCATION_STATUSES = (REVOKED, ALREADY_REVOKED, NOT_FOUND, FINISHED, NOT_REVOCABLE)


@dataclass(frozen=True)
class RevocationResult:
    """A channel's definite answer to a revocation; ``detail`` is short and free of candidate data."""

    status: str
    channel: str
    external_id: str | None = None
    detail: str | None = None


class InvitationError(Exception):
    """An invitation call failed; ``retriable`` says whether the same call may succeed later."""

    retriable: bool = False

    def __init__(self, reason: str, *, channel: str | None = None, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.channel = channel
        self.code = code

    def __str__(self) -> str:
        prefix = f"{self.channel}: " if self.channel else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{prefix}{self.reason}{code}"


class RetriableInvitationError(InvitationError):
    """The channel is unavailable or overloaded (timeouts, 5xx, 429, SMTP 4xx): retry with backoff."""

    retriable = True


class PermanentInvitationError(InvitationError):
    """The channel refused this order for good (bad address, 4xx validation error): fail the order."""

    retriable = False


@dataclass(frozen=True)
class InvitationRequest:
    """The facts an inviter needs about one order (a "claimed order"): ids, candidate, job and package.

    Built from the state store's order row (``from_row``) so inviters do not depend on the repository's types.
    """

    order_id: str
    integration_id: str
    package_id: str
    candidate_email: str
    candidate_first_name: str | None = None
    candidate_last_name: str | None = None
    candidate_remote_id: str | None = None
    application_remote_id: str | None = None
    job_remote_id: str | None = None
    job_name: str | None = None
    package_name: str | None = None
    attempt: int = 1

    @property
    def id(self) -> str:
        return self.order_id

    def __repr__(self) -> str:  # candidate data stays out of logs and tracebacks
        return (
            f"InvitationRequest(order_id={self.order_id!r}, integration_id={self.integration_id!r}, "
            f"package_id={self.package_id!r}, attempt={self.attempt})"
        )

    @classmethod
    def from_row(cls, row: Any, *, package_name: str | None = None) -> InvitationRequest:
        """From an order row (a mapping, a SQLAlchemy Row or an object with the ``orders`` column names)."""
        values: Mapping[str, Any]
        if isinstance(row, Mapping):
            values = row
        elif hasattr(row, "_mapping"):
            values = row._mapping
        else:
            values = {key: getattr(row, key) for key in dir(row) if not key.startswith("_")}
        order_json = values.get("order_json") or {}
        candidate = order_json.get("candidate") or {}
        job = order_json.get("job") or {}
        application = order_json.get("application") or {}

        def pick(column: str, nested: Mapping[str, Any], key: str) -> Any:
            value = values.get(column)
            return value if value is not None else nested.get(key)

        return cls(
            order_id=str(values.get("id") or values.get("order_id")),
            integration_id=str(values.get("integration_id") or order_json.get("integration_id") or ""),
            package_id=str(values.get("package_id") or order_json.get("package_id") or ""),
            candidate_email=str(pick("candidate_email", candidate, "email") or ""),
            candidate_first_name=pick("candidate_first_name", candidate, "first_name"),
            candidate_last_name=pick("candidate_last_name", candidate, "last_name"),
            candidate_remote_id=pick("candidate_remote_id", candidate, "remote_id"),
            application_remote_id=pick("application_remote_id", application, "remote_id"),
            job_remote_id=pick("job_remote_id", job, "remote_id"),
            job_name=pick("job_name", job, "name"),
            package_name=package_name,
            attempt=int(values.get("attempts") or 0) or 1,
        )


class InvitationOrder(Protocol):
    """What a channel reads from an order: an `InvitationRequest`, or the state store's `ClaimedOrder` as is.
    (`package_name`, when the object has one, names the package in e-mails.)"""

    @property
    def order_id(self) -> str: ...
    @property
    def integration_id(self) -> str: ...
    @property
    def package_id(self) -> str: ...
    @property
    def candidate_email(self) -> str | None: ...
    @property
    def candidate_first_name(self) -> str | None: ...
    @property
    def candidate_last_name(self) -> str | None: ...
    @property
    def candidate_remote_id(self) -> str | None: ...
    @property
    def application_remote_id(self) -> str | None: ...
    @property
    def job_remote_id(self) -> str | None: ...
    @property
    def job_name(self) -> str | None: ...


@runtime_checkable
class Inviter(Protocol):
    """One invitation channel. ``send`` is called from several threads at once and must be thread-safe."""

    channel: str

    def send(self, order: InvitationOrder, idempotency_key: str) -> InvitationResult:
        """Create the candidate's invitation; raise Retriable/PermanentInvitationError when it cannot."""
        ...


@runtime_checkable
class Revoker(Protocol):
    """A channel that can be asked to withdraw an order's invitation (idempotent, thread-safe)."""

    channel: str

    def revoke(self, order_id: str, reason: str) -> RevocationResult:
        """Withdraw the invitation created for ``order_id``; raise Retriable/PermanentInvitationError when the
        channel gives no definite answer."""
        ...


# What a reminder call found (``ReminderResult.status``).
REMINDER_SENT = (
    "sent"  # this call sent it, or an earlier call with the same key did (the platform deduplicates)
)
REMINDER_NOT_NEEDED = "not_needed"  # the channel holds no open invitation (finished, revoked, unknown)
REMINDER_STATUSES = (REMINDER_SENT, REMINDER_NOT_NEEDED)


@dataclass(frozen=True)
class ReminderResult:
    """A channel's definite answer to a reminder; ``detail`` is short and free of candidate data."""

    status: str
    channel: str
    external_id: str | None = None
    detail: str | None = None
    repeated: bool = False  # the platform answered a repeat of the same key


@dataclass(frozen=True)
class ReminderRequest:
    """What a channel needs to remind one candidate; candidate fields stay out of ``repr`` (and logs)."""

    order_id: str
    integration_id: str
    package_id: str
    number: int
    link: str | None = None  # the invitation's link
    expires_at: datetime | None = None
    package_name: str | None = None
    job_name: str | None = None
    candidate_email: str | None = field(default=None, repr=False)
    candidate_first_name: str | None = field(default=None, repr=False)


@runtime_checkable
class Reminder(Protocol):
    """A channel that can remind a candidate of an open invitation (idempotent per key, thread-safe)."""

    channel: str

    def remind(self, request: ReminderRequest, idempotency_key: str) -> ReminderResult:
        """Send the reminder; raise Retriable/PermanentInvitationError when the channel gives no definite answer."""
        ...
