import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from kombo_sync.kombo.models import (
    ORDER_RECEIVED_WEBHOOK_TYPES,
    ORDER_STATUSES,
    PACKAGE_TYPES,
    RESULT_STATUSES,
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED,
    WEBHOOK_INTEGRATION_CREATED,
    WEBHOOK_INTEGRATION_DELETED,
    WEBHOOK_INTEGRATION_STATE_CHANGED,
    WEBHOOK_TYPES,
    Attachment,
    CheckApiKeyData,
    IntegrationCreatedData,
    IntegrationDeletedData,
    IntegrationDetails,
    IntegrationStateChangedData,
    Order,
    OrderReceivedData,
    OrdersPage,
    Package,
    RemotePackage,
    ResultPayload,
    SetPackagesRequest,
    SubResultAttribute,
    TextAttribute,
    WebhookEnvelope,
    format_kombo_datetime,
    parse_webhook_data,
)
from tests.support.webhooks import KOMBO_EXAMPLES

# Kombo's own webhook examples (from openapi-assessment.json), kept once in tests.support.webhooks.
WEBHOOK_EXAMPLES = copy.deepcopy(KOMBO_EXAMPLES)
ORDER_DATA = WEBHOOK_EXAMPLES["assessment:order-received"]["data"]
END_USER = WEBHOOK_EXAMPLES["integration-created"]["data"]["end_user"]

EXPECTED_DATA_MODEL = {
    WEBHOOK_ASSESSMENT_ORDER_RECEIVED: OrderReceivedData,
    WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED: OrderReceivedData,
    WEBHOOK_INTEGRATION_CREATED: IntegrationCreatedData,
    WEBHOOK_INTEGRATION_DELETED: IntegrationDeletedData,
    WEBHOOK_INTEGRATION_STATE_CHANGED: IntegrationStateChangedData,
}

# API.md section 2.5, canonical request example (SPEC26 example1).
CANONICAL_RESULT = {
    "status": "COMPLETED",
    "score": 90,
    "max_score": 100,
    "result_url": "https://example.com",
    "completed_at": "2023-04-04T00:00:00.000Z",
    "attributes": [
        {"type": "TEXT", "label": "Role fit", "value": "Excellent"},
        {
            "type": "SUB_RESULT",
            "id": "<YOUR_INTERNAL_ID_OF_THE_TEST>",
            "label": "Personality test",
            "score": {"value": 97, "max": 100},
            "status": "COMPLETED",
        },
    ],
    "attachments": [
        {
            "name": "Assessment Report.pdf",
            "data": "SGkgdGhlcmUsIEtvbWJvIGlzIGN1cnJlbnRseSBoaXJpbmcgZW5naW5lZXJzIHRoYXQgbG92ZSB0byB3b3JrIG9uIGRldmVsb3BlciBwcm9kdWN0cy4=",
            "content_type": "application/pdf",
        }
    ],
}

SPEC_CANDIDATES = [Path(__file__).resolve().parents[2] / "docs" / "kombo" / "openapi-assessment.json"]


def _spec_webhook_examples():
    for path in SPEC_CANDIDATES:
        if path.is_file():
            spec = json.loads(path.read_text())
            return {
                name: hook["post"]["requestBody"]["content"]["application/json"]["example"]
                for name, hook in spec["webhooks"].items()
            }
    return None


def test_known_values_are_exported():
    assert "SKILLS_TEST" in PACKAGE_TYPES and len(PACKAGE_TYPES) == 5
    assert ORDER_STATUSES == {"OPEN", "COMPLETED", "CANCELLED", "REJECTED"}
    assert RESULT_STATUSES == {"COMPLETED", "CANCELLED", "OPEN"}
    assert ORDER_RECEIVED_WEBHOOK_TYPES < WEBHOOK_TYPES and len(WEBHOOK_TYPES) == 5


@pytest.mark.parametrize("webhook_type", sorted(WEBHOOK_EXAMPLES))
def test_webhook_examples_parse(webhook_type):
    envelope = WebhookEnvelope.model_validate(WEBHOOK_EXAMPLES[webhook_type])
    assert envelope.type == webhook_type
    data = parse_webhook_data(envelope)
    assert type(data) is EXPECTED_DATA_MODEL[webhook_type]


def test_webhook_examples_of_the_spec_file_parse():
    examples = _spec_webhook_examples()
    assert examples is not None, "docs/kombo/openapi-assessment.json is missing"
    assert set(examples) == WEBHOOK_TYPES
    for webhook_type, example in examples.items():
        envelope = WebhookEnvelope.model_validate(example)
        assert type(parse_webhook_data(envelope)) is EXPECTED_DATA_MODEL[webhook_type]


def test_order_received_fields():
    data = parse_webhook_data(
        WebhookEnvelope.model_validate(WEBHOOK_EXAMPLES[WEBHOOK_ASSESSMENT_ORDER_RECEIVED])
    )
    assert isinstance(data, OrderReceivedData) and isinstance(data, Order)
    assert data.integration_id == "workday:CBNMt7dSNCzBdnRTx87dev4E"
    assert data.candidate.email == "john.doe@gmail.com"
    assert data.job.location is not None and data.job.location.street_2 is None  # absent in the example
    assert data.job.location.country == "DE"
    assert data.job.hiring_team[0].hiring_team_roles == ["RECRUITER"]


def test_integration_webhook_fields():
    deleted = parse_webhook_data(
        WebhookEnvelope.model_validate(WEBHOOK_EXAMPLES[WEBHOOK_INTEGRATION_DELETED])
    )
    assert isinstance(deleted, IntegrationDeletedData)
    assert deleted.deleted_at == datetime(2021, 9, 1, 12, tzinfo=UTC)
    assert deleted.end_user.origin_id == "36123"
    changed = parse_webhook_data(
        WebhookEnvelope.model_validate(WEBHOOK_EXAMPLES[WEBHOOK_INTEGRATION_STATE_CHANGED])
    )
    assert isinstance(changed, IntegrationStateChangedData)
    assert (changed.state, changed.qa_status, changed.setup_status) == ("ACTIVE", "PASSED", "COMPLETED")


def test_unknown_webhook_type_is_not_parsed():
    envelope = WebhookEnvelope.model_validate({"id": "e1", "type": "data-changed", "data": {"x": 1}})
    assert parse_webhook_data(envelope) is None


@pytest.mark.parametrize(
    ("webhook_type", "path"),
    [
        (WEBHOOK_ASSESSMENT_ORDER_RECEIVED, ("integration_id",)),
        (WEBHOOK_ASSESSMENT_ORDER_RECEIVED, ("id",)),
        (WEBHOOK_ASSESSMENT_ORDER_RECEIVED, ("status",)),
        (WEBHOOK_ASSESSMENT_ORDER_RECEIVED, ("candidate", "email")),
        (WEBHOOK_INLINE_ASSESSMENT_ORDER_RECEIVED, ("job",)),
        (WEBHOOK_INTEGRATION_CREATED, ("tool",)),
        (WEBHOOK_INTEGRATION_DELETED, ("deleted_at",)),
        (WEBHOOK_INTEGRATION_STATE_CHANGED, ("state",)),
        (WEBHOOK_INTEGRATION_STATE_CHANGED, ("end_user", "organization_name")),
    ],
)
def test_webhook_data_missing_required_field_is_rejected(webhook_type, path):
    example = copy.deepcopy(WEBHOOK_EXAMPLES[webhook_type])
    target = example["data"]
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    envelope = WebhookEnvelope.model_validate(example)
    with pytest.raises(ValidationError) as excinfo:
        parse_webhook_data(envelope)
    locations = [error["loc"] for error in excinfo.value.errors()]
    assert path in locations  # the 400 answer can name the field


def test_webhook_envelope_requires_id_type_and_data():
    for key in ("id", "type", "data"):
        body = dict(WEBHOOK_EXAMPLES[WEBHOOK_INTEGRATION_CREATED])
        del body[key]
        with pytest.raises(ValidationError):
            WebhookEnvelope.model_validate(body)


def test_webhook_data_accepts_unknown_enum_values_and_extra_keys():
    data = copy.deepcopy(ORDER_DATA)
    data["status"] = "ON_HOLD"
    data["remote_data"] = {"upstream_webhook_body": {}}
    data["job"]["hiring_team"][0]["hiring_team_roles"] = ["INTERVIEWER"]
    data["candidate"]["pronouns"] = "they"
    parsed = OrderReceivedData.model_validate(data)
    assert parsed.status == "ON_HOLD"
    assert parsed.model_extra == {"remote_data": {"upstream_webhook_body": {}}}
    assert parsed.candidate.model_extra == {"pronouns": "they"}
    assert parsed.job.hiring_team[0].hiring_team_roles == ["INTERVIEWER"]

    state = copy.deepcopy(WEBHOOK_EXAMPLES[WEBHOOK_INTEGRATION_STATE_CHANGED]["data"])
    state.update(integration_category="PAYROLL", state="PAUSED", qa_status="SKIPPED")
    del state["setup_status"]  # the 2025 spec had no setup_status
    parsed_state = IntegrationStateChangedData.model_validate(state)
    assert (parsed_state.integration_category, parsed_state.state) == ("PAYROLL", "PAUSED")
    assert parsed_state.setup_status is None


def test_order_from_older_spec_without_status_and_job_details_parses():
    older = {
        "id": "o1",
        "package_id": "p1",
        "candidate": {"email": "a@example.com"},
        "application": {},
        "job": {"name": "Engineer", "location": None, "hiring_team": None},
    }
    order = Order.model_validate(older)
    assert order.status is None and order.job.job_code is None and order.job.description is None
    assert order.job.location is None and order.job.hiring_team == []
    assert order.candidate.first_name is None and order.application.remote_id is None


def test_order_needs_a_candidate_email():
    with pytest.raises(ValidationError):
        Order.model_validate({"id": "o1", "package_id": "p1", "candidate": {"remote_id": "r"}})


def test_orders_page_parses_list_response():
    page = OrdersPage.model_validate({"next": None, "results": [ORDER_DATA], "total": 1})
    assert page.next is None and page.results[0].id == "B5KQKhAgTv6ZwzrfAbqbhipd"


def test_packages():
    package = Package(id="p1", name="TypeScript", description="TS test", type="SKILLS_TEST")
    request = SetPackagesRequest(packages=[package])
    assert request.model_dump(mode="json") == {
        "packages": [{"id": "p1", "name": "TypeScript", "description": "TS test", "type": "SKILLS_TEST"}]
    }
    with pytest.raises(ValidationError):
        Package.model_validate({"id": "p1", "name": "n", "description": "d"})  # Kombo requires type on PUT
    remote = RemotePackage.model_validate(
        {"id": "1001", "name": "TS", "description": "d", "updated_at": None, "type": None}
    )
    assert remote.type is None and remote.updated_at is None
    new_type = RemotePackage.model_validate(
        {
            "id": "1",
            "name": "n",
            "description": "d",
            "updated_at": "2023-06-29T18:47:40.890Z",
            "type": "CODING",
        }
    )
    assert new_type.type == "CODING"
    assert new_type.updated_at == datetime(2023, 6, 29, 18, 47, 40, 890000, tzinfo=UTC)


def test_result_payload_wire_format_matches_the_canonical_example():
    payload = ResultPayload.model_validate(CANONICAL_RESULT)
    assert isinstance(payload.attributes[0], TextAttribute)
    assert isinstance(payload.attributes[1], SubResultAttribute)
    wire = payload.to_wire()
    assert wire == CANONICAL_RESULT
    assert json.loads(json.dumps(wire)) == CANONICAL_RESULT
    assert wire["completed_at"] == "2023-04-04T00:00:00.000Z"


def test_result_payload_built_in_code_matches_the_canonical_example():
    payload = ResultPayload(
        status="COMPLETED",
        result_url="https://example.com",
        completed_at=datetime(2023, 4, 4, 2, 0, tzinfo=timezone(timedelta(hours=2))),
        score=90,
        max_score=100,
        attributes=[
            TextAttribute(label="Role fit", value="Excellent"),
            SubResultAttribute(
                id="<YOUR_INTERNAL_ID_OF_THE_TEST>",
                label="Personality test",
                score={"value": 97, "max": 100},
                status="COMPLETED",
            ),
        ],
        attachments=[Attachment(**CANONICAL_RESULT["attachments"][0])],
    )
    assert payload.to_wire() == CANONICAL_RESULT


def test_result_payload_leaves_out_unset_optional_fields():
    wire = ResultPayload(status="CANCELLED", result_url="https://x.test/r/1").to_wire()
    assert wire == {
        "status": "CANCELLED",
        "result_url": "https://x.test/r/1",
        "attributes": [],
        "attachments": [],
    }
    zero = ResultPayload(status="COMPLETED", result_url="https://x", score=0).to_wire()
    assert zero["score"] == 0  # zero is a score, not a missing one


def test_result_payload_remote_fields_keep_wire_names():
    payload = ResultPayload.model_validate(
        {
            "status": "COMPLETED",
            "result_url": "https://x",
            "remote_fields": {
                "smartrecruiters": {"score_label": "Top 10%"},
                "recruitee": {"subtitle": "Skills"},
            },
        }
    )
    wire = payload.to_wire()
    assert wire["remote_fields"] == {
        "smartrecruiters": {"scoreLabel": "Top 10%"},
        "recruitee": {"subtitle": "Skills"},
    }
    again = ResultPayload.model_validate(wire)
    assert again.remote_fields is not None and again.remote_fields.smartrecruiters is not None
    assert again.remote_fields.smartrecruiters.score_label == "Top 10%"


def test_result_payload_validation():
    with pytest.raises(ValidationError):
        ResultPayload.model_validate({"status": "COMPLETED"})  # result_url is required
    with pytest.raises(ValidationError):
        ResultPayload.model_validate(
            {
                "status": "COMPLETED",
                "result_url": "https://x",
                "attributes": [{"type": "CHART", "label": "x"}],
            }
        )
    with pytest.raises(ValidationError):
        Attachment(name="r.pdf", data="AAAA")  # content_type is required with data
    with pytest.raises(ValidationError):
        Attachment(name="r.pdf", content_type="application/pdf")  # neither data nor data_url
    with pytest.raises(ValidationError):
        Attachment(name="r.pdf", data="AAAA", data_url="https://x/r.pdf", content_type="application/pdf")
    assert Attachment(name="r.pdf", data_url="https://x/r.pdf").content_type is None


def test_format_kombo_datetime():
    assert (
        format_kombo_datetime(datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)) == "2024-01-02T03:04:05.678Z"
    )
    assert format_kombo_datetime(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"  # naive = UTC
    cet = timezone(timedelta(hours=1))
    assert format_kombo_datetime(datetime(2024, 1, 1, 0, 30, tzinfo=cet)) == "2023-12-31T23:30:00.000Z"


def test_check_api_key_data():
    assert CheckApiKeyData.model_validate({"environment_id": "env1"}).environment_id == "env1"
    assert CheckApiKeyData.model_validate({"customer_id": "env2"}).environment_id == "env2"
    with pytest.raises(ValidationError):
        CheckApiKeyData.model_validate({})


def test_integration_details_tolerates_unknown_values_and_missing_keys():
    details = IntegrationDetails.model_validate(
        {
            "id": "workday:abc",
            "tool": {"id": "workday", "label": "Workday", "internal_label": None, "logo_url": "https://l"},
            "category": "ATS",
            "status": "SUSPENDED",
            "end_user": {"organization_name": "Acme", "creator_email": None, "origin_id": None},
            "beta": False,
            "read_models": [],
            "write_actions": [
                {"id": "ats_update_assessment_result", "label": "x", "is_available": True, "fields": []}
            ],
            "new_key": 1,
        }
    )
    assert details.status == "SUSPENDED" and details.tool.id == "workday"
    assert details.write_actions[0].is_available is True
    assert details.setup_status is None and details.model_extra == {"new_key": 1}
