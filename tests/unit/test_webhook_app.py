"""The FastAPI adapter (in-process, no server): body cap, hand-off to the handler, and the catch-all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from kombo_sync.settings import PipelineSettings
from kombo_sync.state.integrations import IntegrationRepository
from kombo_sync.state.store import StateStore
from kombo_sync.webhooks.app import create_app
from kombo_sync.webhooks.handlers import WebhookDeps
from tests.support.webhooks import order_event, signed

SECRET = "whsec_app"


@pytest.fixture
def store(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    IntegrationRepository(store).upsert("workday:CBNMt7dSNCzBdnRTx87dev4E", source="admin")
    yield store
    store.dispose()


def client_for(deps_factory) -> TestClient:
    return TestClient(create_app(deps_factory), raise_server_exceptions=False)


def deps_for(store, **kwargs):
    return lambda: WebhookDeps(secrets=lambda: [SECRET], store=store, settings=PipelineSettings(), **kwargs)


def test_signed_order_is_accepted(store):
    body, headers = signed(order_event(), SECRET)
    response = client_for(deps_for(store)).post("/webhooks", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "ACCEPTED"


def test_rejection_is_exactly_kombos_shape(store):
    body, headers = signed(order_event(integration_id="lever:unknown"), SECRET)
    response = client_for(deps_for(store)).post("/webhooks", content=body, headers=headers)
    assert response.status_code == 422
    assert set(response.json()) == {"status", "message"}
    assert response.json()["status"] == "ORDER_REJECTED"


def test_oversized_body_is_413(store):
    body, headers = signed(b"{" + b" " * 2_000_000 + b"}", SECRET)
    response = client_for(deps_for(store)).post("/webhooks", content=body, headers=headers)
    assert response.status_code == 413


def test_other_methods_and_paths_are_4xx(store):
    client = client_for(deps_for(store))
    assert client.get("/webhooks").status_code == 405
    assert client.post("/elsewhere", content=b"{}").status_code == 404


def test_deps_are_built_once_on_first_request(store):
    built = []

    def factory():
        built.append(1)
        return deps_for(store)()

    client = client_for(factory)
    assert built == []  # creating the app does no work
    for _ in range(3):
        client.post("/webhooks", content=b"{}", headers={"Content-Type": "application/json"})
    assert built == [1]


class BrokenStore:
    """A store whose database is gone, or whose code has a bug."""

    dialect = "postgresql"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def now(self):
        raise self.exc

    def transaction(self, *args, **kwargs):
        raise self.exc


def test_database_down_is_503_without_a_stack_trace():
    exc = sa.exc.OperationalError("SELECT 1", {"email": "person@gmail.com"}, Exception("connection refused"))
    deps = lambda: WebhookDeps(secrets=lambda: [SECRET], store=BrokenStore(exc), settings=PipelineSettings())  # noqa: E731
    body, headers = signed(order_event(), SECRET)
    response = client_for(deps).post("/webhooks", content=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "Traceback" not in response.text and "person@gmail.com" not in response.text


def test_a_bug_is_500_without_a_stack_trace():
    deps = lambda: WebhookDeps(  # noqa: E731
        secrets=lambda: [SECRET], store=BrokenStore(ZeroDivisionError("oops")), settings=PipelineSettings()
    )
    body, headers = signed(order_event(), SECRET)
    response = client_for(deps).post("/webhooks", content=body, headers=headers)
    assert response.status_code == 500
    assert (
        "Traceback" not in response.text
        and "ZeroDivision" not in response.text
        and "oops" not in response.text
    )


def test_bad_input_never_touches_the_broken_store():
    deps = lambda: WebhookDeps(  # noqa: E731
        secrets=lambda: [SECRET],
        store=BrokenStore(RuntimeError("must not be reached")),
        settings=PipelineSettings(),
    )
    client = client_for(deps)
    assert (
        client.post("/webhooks", content=b"{}", headers={"Content-Type": "application/json"}).status_code
        == 401
    )
    body, headers = signed(b"not json", SECRET)
    assert client.post("/webhooks", content=body, headers=headers).status_code == 400
