"""`KomboClient.put_result_async` (aiohttp on an event loop) against the Kombo sandbox over real HTTP: the same
in-flight cap, rate-limit retries and lost-reply rule as the synchronous calls."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.errors import KomboError, KomboFatalError
from kombo_sync.kombo.limits import RateBudget
from kombo_sync.kombo.models import ResultPayload


def client_for(sandbox: Any, **options: Any) -> KomboClient:
    defaults: dict[str, Any] = {
        "timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.02,
        "backoff_cap": 0.2,
        "rate_budget": RateBudget(None, default_pause=0.05),
    }
    return KomboClient(sandbox.api_url, sandbox.api_key, **{**defaults, **options})


def open_orders(sandbox: Any, integration_id: str, count: int) -> list[str]:
    return [sandbox.admin.create_order(integration_id, "py-basics")["id"] for _ in range(count)]


def payload(order_id: str) -> dict[str, Any]:
    """Kombo's wire form, as the outbox holds it (validated when queued)."""
    return ResultPayload(
        status="COMPLETED",
        result_url=f"https://platform.example/results/{order_id}",
        score=7.5,
        completed_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
    ).to_wire()


def writes(sandbox: Any, order_id: str) -> list[dict[str, Any]]:
    return [write for write in sandbox.admin.get_order(order_id)["results"] if write["outcome"] == "applied"]


async def put_all(client: KomboClient, integration_id: str, order_ids: list[str]) -> list[Any]:
    try:
        return await asyncio.gather(
            *(
                client.put_result_async(integration_id, order_id, payload(order_id), validated=True)
                for order_id in order_ids
            ),
            return_exceptions=True,
        )
    finally:
        await client.aclose()


def test_async_puts_stay_under_the_in_flight_cap_and_each_lands_once(kombo_sandbox):
    integration_id = kombo_sandbox.admin.create_integration(tool="workday")["id"]
    order_ids = open_orders(kombo_sandbox, integration_id, 40)
    kombo_sandbox.admin.set_knobs(latency_ms="20", concurrency_limit=30)
    kombo_sandbox.admin.clear_requests()
    client = client_for(kombo_sandbox, max_in_flight_per_integration=4)
    answers = asyncio.run(put_all(client, integration_id, order_ids))
    assert answers == [[]] * 40  # no errors, no warnings
    assert kombo_sandbox.admin.stats()["max_concurrency"] <= 4
    for order_id in order_ids:
        (write,) = writes(kombo_sandbox, order_id)
        assert write["body"]["status"] == "COMPLETED" and write["body"]["score"] == 7.5
    assert client.in_flight.in_flight(integration_id) == 0


def test_async_puts_retry_429s_and_5xx_and_land_once(kombo_sandbox):
    integration_id = kombo_sandbox.admin.create_integration(tool="workday")["id"]
    order_ids = open_orders(kombo_sandbox, integration_id, 30)
    kombo_sandbox.admin.set_knobs(throttle_rate=0.3, error_rate=0.2, fault_methods=["PUT"], seed=7)
    client = client_for(kombo_sandbox, max_retries=8)
    answers = asyncio.run(put_all(client, integration_id, order_ids))
    kombo_sandbox.admin.set_knobs(throttle_rate=0, error_rate=0)
    assert answers == [[]] * 30
    faults = kombo_sandbox.admin.stats()["faults"]
    assert faults.get("throttle") and faults.get("error"), faults
    assert all(len(writes(kombo_sandbox, order_id)) == 1 for order_id in order_ids)


def test_a_lost_reply_is_reported_possibly_applied_and_never_silently_resent(kombo_sandbox):
    integration_id = kombo_sandbox.admin.create_integration(tool="workday")["id"]
    (order_id,) = open_orders(kombo_sandbox, integration_id, 1)
    # Warm a kept-alive connection first: aiohttp would resend an idempotent PUT on it once if allowed.
    client = client_for(kombo_sandbox, max_retries=0)

    async def warm_then_lose() -> BaseException | list[str]:
        try:
            await client.put_result_async(
                integration_id,
                *open_orders(kombo_sandbox, integration_id, 1),
                {"status": "COMPLETED", "result_url": "https://platform.example/warm"},
            )
            kombo_sandbox.admin.set_knobs(
                lost_response_rate=1.0, lost_response_mode="close", fault_methods=["PUT"]
            )
            try:
                return await client.put_result_async(
                    integration_id, order_id, payload(order_id), validated=True
                )
            except KomboError as error:
                return error
        finally:
            await client.aclose()

    outcome = asyncio.run(warm_then_lose())
    kombo_sandbox.admin.set_knobs(lost_response_rate=0)
    assert isinstance(outcome, KomboError) and outcome.maybe_applied is True
    assert len(writes(kombo_sandbox, order_id)) == 1
    # One PUT reached Kombo: aiohttp's own resend of an idempotent request on a dropped connection is off.
    puts = kombo_sandbox.admin.requests(path_prefix=f"/v1/assessment/orders/{order_id}/result")
    assert [request["method"] for request in puts] == ["PUT"]


def test_a_refusal_is_not_retried_and_says_it_was_not_applied(kombo_sandbox):
    integration_id = kombo_sandbox.admin.create_integration(tool="workday")["id"]
    (order_id,) = open_orders(kombo_sandbox, integration_id, 1)
    client = client_for(kombo_sandbox)

    async def twice() -> KomboError:
        try:
            await client.put_result_async(integration_id, order_id, payload(order_id), validated=True)
            changed = {**payload(order_id), "status": "CANCELLED"}
            with pytest.raises(KomboFatalError) as refused:
                await client.put_result_async(integration_id, order_id, changed, validated=True)
            return refused.value
        finally:
            await client.aclose()

    error = asyncio.run(twice())
    assert error.maybe_applied is False and error.code
    assert len(writes(kombo_sandbox, order_id)) == 1
