"""Pydantic models of Kombo's ATS-Assessment API requests, responses and webhooks
(docs/kombo/openapi-assessment.json).

Every model accepts unknown keys (``extra="allow"``) and enum-like fields are plain ``str`` with the known
values exported as frozensets, so Kombo adding a field or an enum value does not stop the pipeline. Keys that
older spec versions omit default to ``None`` / ``[]``. Webhook data models keep the keys we cannot work
without required, so a malformed webhook fails validation (and is answered 400) instead of being recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

PACKAGE_TYPES = frozenset(
    {"BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK"}
)

ORDER_STATUS_OPEN = "OPEN"
ORDER_STATUS_COMPLETED = "COMPLETED"
ORDER_STATUS_CANCELLED = "CANCELLED"
ORDER_STATUS_REJECTED = "REJECTED"
ORDER_STATUSES = frozenset(
    {ORDER_STATUS_OPEN, ORDER_STATUS_COMPLETED, ORDER_STATUS_CANCELLED, ORDER_STATUS_REJECTED}
)

RESULT_STATUS_COMPLETED = "COMPLETED"
RESULT_STATUS_CANCELLED = "CANCELLED"
RESULT_STATUS_OPEN = "OPEN"
RESULT_STATUSES = frozenset({RESULT_STATUS_COMPLETED, RESULT_STATUS_CANCELLED, RESULT_STATUS_OPEN})
SUB_RESULT_STATUSES = frozenset({RESULT_STATUS_COMPLETED, RESULT_STATUS_CANCELLED})

ATTRIBUTE_TYPE_TEXT = "TEXT"
ATTRIBUTE_TYPE_SUB_RESULT = "SUB_RESULT"
ATTRIBUTE_TYPES = frozenset({ATTRIBUTE_TYPE_TEXT, ATTRIBUTE_TYPE_SUB_RESULT})

HIRING_TEAM_ROLES = frozenset({"RECRUITER", "HIRING_MANAGER"})
INTEGRATION_CATEGORIES = frozenset({"HRIS", "ATS", "ASSESSMENT", "LMS"})
INTEGRATION_STATES = frozenset({"ACTIVE", "INVALID", "INACTIVE"})
SETUP_STATUSES = frozenset({"INCOMPLETE", "FINAL_SYNC_PENDING", "COMPLETED"})
QA_STATUSES = frozenset({"PENDING", "FAILED", "PASSED"})
COVERAGE_STATUSES = frozenset({"SUPPORTED", "UNSUPPORTED", "NOT_IMPLEMENTED", "UNKNOWN"})
SCOPE_CONFIG_SETTINGS = frozenset({"ENABLED", "DISABLED", "OPTIONAL"})

WEBHOOK_ASSESSMENT_ORDER_RECEIVED = "assessment:order-received"
WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED = "inline-assessment:order-received"
WEBHOOK_INTEGRATION_CREATED = "integration-created"
WEBHOOK_INTEGRATION_DELETED = "integration-deleted"
WEBHOOK_INTEGRATION_STATE_CHANGED = "integration-state-changed"
ORDER_RECEIVED_WEBHOOK_TYPES = frozenset(
    {WEBHOOK_ASSESSMENT_ORDER_RECEIVED, WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED}
)
WEBHOOK_TYPES = ORDER_RECEIVED_WEBHOOK_TYPES | {
    WEBHOOK_INTEGRATION_CREATED,
    WEBHOOK_INTEGRATION_DELETED,
    WEBHOOK_INTEGRATION_STATE_CHANGED,
}


def format_kombo_datetime(value: datetime) -> str:
    """Format as Kombo's ``YYYY-MM-DDTHH:mm:ss.sssZ`` in UTC; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class KomboModel(BaseModel):
    """Base of every Kombo model: unknown keys are kept, aliases and field names both accepted."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class KomboWarning(KomboModel):
    message: str


class Package(KomboModel):
    """A package as sent with ``PUT /assessment/packages`` (all four keys required by Kombo)."""

    id: str = Field(min_length=1)
    name: str
    description: str
    type: str


class RemotePackage(KomboModel):
    """A package as returned by ``GET /assessment/packages`` (``type`` and ``updated_at`` may be null)."""

    id: str
    name: str | None = None
    description: str | None = None
    type: str | None = None
    updated_at: datetime | None = None


class SetPackagesRequest(KomboModel):
    packages: list[Package] = Field(default_factory=list)


class Candidate(KomboModel):
    remote_id: str | None = None
    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None


class Application(KomboModel):
    remote_id: str | None = None


class Location(KomboModel):
    street_1: str | None = None
    street_2: str | None = None
    city: str | None = None
    state: str | None = None
    zip_code: str | None = None
    country: str | None = None
    raw: str | None = None


class HiringTeamMember(KomboModel):
    remote_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    hiring_team_roles: list[str] = Field(default_factory=list)


class Job(KomboModel):
    remote_id: str | None = None
    name: str | None = None
    job_code: str | None = None
    description: str | None = None
    location: Location | None = None
    hiring_team: list[HiringTeamMember] = Field(default_factory=list)

    @field_validator("hiring_team", mode="before")
    @classmethod
    def _null_team_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class Order(KomboModel):
    """An assessment order from ``GET /assessment/orders`` (``status`` is absent from the deprecated /open)."""

    id: str
    package_id: str
    status: str | None = None
    candidate: Candidate
    application: Application = Field(default_factory=Application)
    job: Job = Field(default_factory=Job)


class OrdersPage(KomboModel):
    next: str | None = None
    results: list[Order] = Field(default_factory=list)


class TextAttribute(KomboModel):
    type: Literal["TEXT"] = "TEXT"
    label: str
    value: str


class SubResultScore(KomboModel):
    value: float
    max: float = Field(ge=1)


class SubResultAttribute(KomboModel):
    type: Literal["SUB_RESULT"] = "SUB_RESULT"
    id: str
    label: str
    score: SubResultScore
    status: str


ResultAttribute = Annotated[TextAttribute | SubResultAttribute, Field(discriminator="type")]


class Attachment(KomboModel):
    """A result file: exactly one of ``data`` (standard base64) or ``data_url``; ``content_type`` with ``data``."""

    name: str
    content_type: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    data: str | None = None
    data_url: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.data is None) == (self.data_url is None):
            raise ValueError("an attachment needs exactly one of data or data_url")
        if self.data is not None and self.content_type is None:
            raise ValueError("content_type is required when data is given")
        return self


class SmartRecruitersRemoteFields(KomboModel):
    score_label: str | None = Field(default=None, alias="scoreLabel")


class RecruiteeRemoteFields(KomboModel):
    subtitle: str | None = None


class RemoteFields(KomboModel):
    smartrecruiters: SmartRecruitersRemoteFields | None = None
    recruitee: RecruiteeRemoteFields | None = None
    workday: dict[str, Any] | None = None


class ResultPayload(KomboModel):
    """Body of ``PUT /assessment/orders/{id}/result``; ``to_wire()`` gives the JSON Kombo expects."""

    status: str
    result_url: str
    completed_at: datetime | None = None
    score: float | None = None
    max_score: float | None = None
    attributes: list[ResultAttribute] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list, max_length=5)
    remote_fields: RemoteFields | None = None

    @field_validator("completed_at")
    @classmethod
    def _completed_at_utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @field_serializer("completed_at")
    def _serialize_completed_at(self, value: datetime | None) -> str | None:
        return None if value is None else format_kombo_datetime(value)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict: optional keys left out when None, wire names (``scoreLabel``) used."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ToolInfo(KomboModel):
    id: str | None = None
    label: str | None = None
    internal_label: str | None = None
    logo_url: str | None = None
    icon_url: str | None = None


class EndUser(KomboModel):
    organization_name: str | None = None
    creator_email: str | None = None
    origin_id: str | None = None


class ScopeConfig(KomboModel):
    id: str | None = None
    name: str | None = None


class FieldCoverage(KomboModel):
    id: str | None = None
    is_available: bool | None = None
    coverage_status: str | None = None
    scope_config_setting: str | None = None
    opted_out_by_customer: bool | None = None


class ModelCoverage(KomboModel):
    """An entry of ``read_models`` or ``write_actions`` in the integration details."""

    id: str | None = None
    label: str | None = None
    is_available: bool | None = None
    coverage_status: str | None = None
    scope_config_setting: str | None = None
    opted_out_by_customer: bool | None = None
    fields: list[FieldCoverage] = Field(default_factory=list)


class IntegrationDetails(KomboModel):
    """``GET /integrations/{integration_id}``."""

    id: str
    tool: ToolInfo = Field(default_factory=ToolInfo)
    category: str | None = None
    status: str | None = None
    setup_status: str | None = None
    end_user: EndUser = Field(default_factory=EndUser)
    scope_config: ScopeConfig | None = None
    data_expired_at: datetime | None = None
    created_at: datetime | None = None
    beta: bool | None = None
    read_models: list[ModelCoverage] = Field(default_factory=list)
    write_actions: list[ModelCoverage] = Field(default_factory=list)


class CheckApiKeyData(KomboModel):
    """``GET /check-api-key``; ``customer_id`` is the deprecated name of ``environment_id``."""

    environment_id: str
    customer_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_from_customer_id(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("environment_id") is None and value.get("customer_id"):
            return {**value, "environment_id": value["customer_id"]}
        return value


class WebhookEnvelope(KomboModel):
    """Every Kombo webhook body: ``id`` is the event id (dedupe on it), ``data`` depends on ``type``."""

    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    data: dict[str, Any]


class OrderReceivedData(Order):
    """``data`` of ``assessment:order-received`` and ``inline-assessment:order-received``."""

    integration_id: str = Field(min_length=1)
    status: str
    application: Application
    job: Job


class WebhookEndUser(KomboModel):
    organization_name: str
    creator_email: str | None = None
    origin_id: str | None = None


class IntegrationCreatedData(KomboModel):
    id: str = Field(min_length=1)
    tool: str
    category: str
    end_user: WebhookEndUser


class IntegrationDeletedData(IntegrationCreatedData):
    deleted_at: datetime


class IntegrationStateChangedData(KomboModel):
    integration_tool: str
    integration_id: str = Field(min_length=1)
    integration_category: str
    end_user: WebhookEndUser
    qa_status: str
    # Absent from the 2025 spec, so tolerated when missing.
    setup_status: str | None = None
    state: str
    updated_at: datetime


WEBHOOK_DATA_MODELS: dict[str, type[KomboModel]] = {
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED: OrderReceivedData,
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED: OrderReceivedData,
    WEBHOOK_INTEGRATION_CREATED: IntegrationCreatedData,
    WEBHOOK_INTEGRATION_DELETED: IntegrationDeletedData,
    WEBHOOK_INTEGRATION_STATE_CHANGED: IntegrationStateChangedData,
}


def parse_webhook_data(envelope: WebhookEnvelope) -> KomboModel | None:
    """Validate ``envelope.data`` for its type; None for a type we do not handle (raises ValidationError if bad)."""
    model = WEBHOOK_DATA_MODELS.get(envelope.type)
    return None if model is None else model.model_validate(envelope.data)
