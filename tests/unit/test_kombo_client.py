import json
import logging
import pickle
import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from kombo_sync.kombo.client import KomboClient
from kombo_sync.kombo.errors import (
    KomboConcurrencyLimitError,
    KomboError,
    KomboFatalError,
    KomboInvalidResponseError,
    KomboRateLimitError,
    KomboRemoteError,
    KomboRetriableError,
    KomboRetriesExhaustedError,
    KomboServerError,
    KomboTimeoutError,
    KomboTransportError,
    error_from_response,
    parse_retry_after,
)
from kombo_sync.kombo.limits import InFlightLimiter, RateBudget
from kombo_sync.kombo.models import Order, Package, ResultPayload
from tests.support.fake_time import FakeTime

API_KEY = "sk_live_do_not_log_me"
BASE_URL = "https://api.kombo.test/v1"
INTEGRATION = "workday:HWUTwvyx2wLoSUHphiWVrp28"
LOG_URL = "https://app.kombo.dev/my-prod/logs?interactionId=123456"
CANDIDATE_EMAIL = "private.person@example.com"


class Script:
    """An httpx handler answering from a list of responses (or exceptions to raise), recording requests."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def ok(data, **extra) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": data, **extra})


def kombo_error(status: int, code: str | None, headers=None, message="it failed") -> httpx.Response:
    body = {"status": "error", "error": {"code": code, "title": "t", "message": message, "log_url": LOG_URL}}
    return httpx.Response(status, json=body, headers=headers or {})


def order(order_id: str) -> dict:
    return {
        "id": order_id,
        "package_id": "pkg",
        "status": "OPEN",
        "candidate": {
            "remote_id": "c",
            "email": CANDIDATE_EMAIL,
            "first_name": "Private",
            "last_name": "Person",
            "phone": None,
        },
        "application": {"remote_id": "a"},
        "job": {"remote_id": "j", "name": "Engineer", "location": None, "hiring_team": []},
    }


def make_client(handler, **options) -> tuple[KomboClient, FakeTime]:
    fake = FakeTime()
    defaults = {"sleep": fake.sleep, "clock": fake.clock, "rng": lambda: 0.5}
    defaults.update(options)
    client = KomboClient(BASE_URL, API_KEY, transport=httpx.MockTransport(handler), **defaults)
    return client, fake


def test_constructor_does_no_network():
    calls = []
    client = KomboClient(BASE_URL, API_KEY, transport=httpx.MockTransport(calls.append))
    client.close()
    assert calls == [] and client._http is None


def test_every_request_has_auth_integration_header_and_timeout():
    script = Script(
        ok({"packages": [{"id": "1", "name": "n", "description": "d", "updated_at": None, "type": None}]})
    )
    client, _ = make_client(script, timeout=7.5)
    packages = client.get_packages(INTEGRATION)
    assert [p.id for p in packages] == ["1"]
    request = script.requests[0]
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["X-Integration-Id"] == INTEGRATION
    assert str(request.url) == f"{BASE_URL}/assessment/packages"
    assert request.extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_check_api_key_and_get_integration_send_no_integration_header():
    script = Script(
        ok({"environment_id": "env_1", "customer_id": "env_1"}),
        ok({"id": INTEGRATION, "tool": {"id": "workday"}, "category": "ATS", "status": "ACTIVE"}),
    )
    client, _ = make_client(script)
    assert client.check_api_key().environment_id == "env_1"
    details = client.get_integration(INTEGRATION)
    assert details.id == INTEGRATION and details.status == "ACTIVE"
    assert [r.url.path for r in script.requests] == [
        "/v1/check-api-key",
        "/v1/integrations/workday:HWUTwvyx2wLoSUHphiWVrp28",
    ]
    assert all("X-Integration-Id" not in r.headers for r in script.requests)


def test_paging_follows_cursor_and_keeps_filters(caplog):
    pages = {
        None: ok({"next": "cur_2", "results": [order("o1"), order("o2")]}),
        "cur_2": ok({"next": "cur_3", "results": [order("o3"), order("o4")]}),
        "cur_3": ok({"next": "cur_4", "results": [order("o5")]}),
        "cur_4": ok({"next": None, "results": []}),
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return pages[request.url.params.get("cursor")]

    client, _ = make_client(handler)
    caplog.set_level(logging.INFO, logger="kombo_sync.kombo.client")
    created_after = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    pager = client.iter_order_pages(INTEGRATION, statuses=["OPEN"], created_after=created_after, page_size=2)
    assert seen == []  # a generator: nothing is fetched before the first page is asked for
    first = next(pager)
    assert [o.id for o in first] == ["o1", "o2"] and len(seen) == 1
    rest = list(pager)
    assert [[o.id for o in page] for page in rest] == [["o3", "o4"], ["o5"], []]
    assert [r.url.params.get("cursor") for r in seen] == [None, "cur_2", "cur_3", "cur_4"]
    for request in seen:
        assert request.url.params["statuses"] == "OPEN"
        assert request.url.params["created_after"] == "2026-05-01T08:30:00.000Z"
        assert request.url.params["page_size"] == "2"
        assert request.headers["X-Integration-Id"] == INTEGRATION
    assert f"integration {INTEGRATION} page 3, 5 orders so far" in caplog.text
    assert CANDIDATE_EMAIL not in caplog.text and "Private" not in caplog.text
    assert API_KEY not in caplog.text


def test_iter_orders_flattens_and_get_orders_by_ids_chunks():
    def handler(request: httpx.Request) -> httpx.Response:
        ids = request.url.params["ids"].split(",")
        return ok({"next": None, "results": [order(i) for i in ids if not i.endswith("missing")]})

    client, _ = make_client(handler)
    wanted = [f"o{i}" for i in range(150)] + ["o3", "x-missing"]
    found = client.get_orders_by_ids(INTEGRATION, wanted)
    assert [o.id for o in found] == [f"o{i}" for i in range(150)]
    assert all(isinstance(o, Order) for o in found)
    assert list(client.iter_orders(INTEGRATION, ids=[])) == []  # empty filter: no request, no orders
    assert [o.id for o in client.iter_orders(INTEGRATION, ids="a,b")] == ["a", "b"]


def test_repeated_cursor_stops_instead_of_looping():
    client, _ = make_client(Script(ok({"next": "same", "results": [order("o1")]})))
    with pytest.raises(KomboInvalidResponseError):
        list(client.iter_order_pages(INTEGRATION))


def test_rate_limit_429_honours_ratelimit_reset_then_succeeds():
    script = Script(
        kombo_error(
            429,
            "PLATFORM.RATE_LIMIT_EXCEEDED",
            headers={"ratelimit-limit": "300", "ratelimit-remaining": "0", "ratelimit-reset": "7"},
        ),
        ok({"environment_id": "env"}),
    )
    client, fake = make_client(script)
    assert client.check_api_key().environment_id == "env"
    assert len(script.requests) == 2
    assert fake.sleeps == [7.0]  # not the 0.25 s jittered backoff: the server's reset wins
    assert client.rate_budget.paused_until == pytest.approx(1007.0)  # every thread was held too


def test_rate_limit_429_honours_retry_after_seconds_and_http_date():
    script = Script(
        kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers={"Retry-After": "3"}),
        ok({"environment_id": "env"}),
    )
    client, fake = make_client(script)
    client.check_api_key()
    assert fake.sleeps == [3.0]

    in_twenty = format_datetime(datetime.fromtimestamp(time.time() + 20, tz=UTC), usegmt=True)
    assert parse_retry_after(in_twenty) == pytest.approx(20, abs=1.5)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert parse_retry_after("soon") is None


def test_retry_after_beyond_the_limit_gives_up_at_once():
    script = Script(kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers={"Retry-After": "3600"}))
    client, fake = make_client(script, max_retry_after=300)
    with pytest.raises(KomboRetriesExhaustedError) as excinfo:
        client.check_api_key()
    assert fake.sleeps == [] and len(script.requests) == 1
    assert excinfo.value.retry_after == 3600


def test_concurrency_limit_429_backs_off_without_pausing_other_integrations():
    script = Script(
        kombo_error(429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", headers={"ratelimit-reset": "50"}),
        ok({}, warnings=[]),
    )
    client, fake = make_client(script)
    assert client.put_result(INTEGRATION, "o1", {"status": "COMPLETED", "result_url": "https://r"}) == []
    assert len(script.requests) == 2
    assert fake.sleeps == [0.25]  # rng 0.5 * base 0.5: jittered backoff, the rate window is irrelevant
    assert client.rate_budget.paused_until == 0.0


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="<html><body>503 Service Temporarily Unavailable</body></html>"),
        httpx.Response(502, text="Bad Gateway"),
        kombo_error(500, "PLATFORM.UNKNOWN_ERROR"),
        kombo_error(504, "PLATFORM.TASK_TIMED_OUT"),
        kombo_error(502, "REMOTE.SERVICE_UNAVAILABLE"),
        kombo_error(429, "REMOTE.RATE_LIMIT_EXCEEDED"),
        kombo_error(503, None),
        kombo_error(500, "PLATFORM.SOMETHING_NEW"),  # an unknown code falls back to the status
    ],
)
def test_transient_failure_then_success(failure):
    script = Script(failure, ok({"environment_id": "env"}))
    client, fake = make_client(script)
    assert client.check_api_key().environment_id == "env"
    assert len(script.requests) == 2 and fake.sleeps == [0.25]


def test_timeout_then_success():
    script = Script(httpx.ReadTimeout("read timed out"), ok({"next": None, "results": [order("o1")]}))
    client, fake = make_client(script)
    assert [o.id for o in client.iter_orders(INTEGRATION)] == ["o1"]
    assert len(script.requests) == 2 and len(fake.sleeps) == 1


def test_connection_error_then_success():
    script = Script(httpx.ConnectError("refused"), ok({"environment_id": "env"}))
    client, _ = make_client(script)
    assert client.check_api_key().environment_id == "env"
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INTEGRATION.INACTIVE"),
        (400, "PLATFORM.INPUT_INVALID"),
        (401, "PLATFORM.AUTHENTICATION_INVALID"),
        (404, "PLATFORM.INTEGRATION_NOT_FOUND"),
        (503, "INTEGRATION.INACTIVE"),  # the code decides, not the status
        (400, "PLATFORM.UNKNOWN_ERROR"),
        (422, None),
    ],
)
def test_fatal_errors_are_raised_at_once_with_code_and_log_url(status, code):
    script = Script(kombo_error(status, code, message="Integration is inactive"))
    client, fake = make_client(script)
    with pytest.raises(KomboFatalError) as excinfo:
        client.put_result(INTEGRATION, "o1", {"status": "COMPLETED", "result_url": "https://r"})
    error = excinfo.value
    assert (error.code, error.log_url, error.http_status) == (code, LOG_URL, status)
    assert error.retriable is False
    assert (error.method, error.path) == ("PUT", "/assessment/orders/o1/result")
    assert len(script.requests) == 1 and fake.sleeps == []
    assert API_KEY not in str(error) and LOG_URL in str(error)


def test_retries_exhausted_keeps_last_code_and_counts_attempts():
    script = Script(
        kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE"),
        kombo_error(429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED"),
        kombo_error(504, "PLATFORM.TASK_TIMED_OUT"),
    )
    client, fake = make_client(script, max_retries=3)
    with pytest.raises(KomboRetriesExhaustedError) as excinfo:
        client.check_api_key()
    error = excinfo.value
    assert len(script.requests) == 4 and error.attempts == 4 and len(fake.sleeps) == 3
    assert error.code == "PLATFORM.TASK_TIMED_OUT" and error.log_url == LOG_URL and error.http_status == 504
    assert isinstance(error.last_error, KomboServerError)
    assert error.retriable is True  # transient cause: a later run may succeed
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.code, restored.attempts, type(restored.last_error)) == (error.code, 4, KomboServerError)


def test_no_retries_when_max_retries_is_zero():
    script = Script(httpx.ReadTimeout("slow"))
    client, fake = make_client(script, max_retries=0)
    with pytest.raises(KomboRetriesExhaustedError) as excinfo:
        client.check_api_key()
    assert isinstance(excinfo.value.last_error, KomboTimeoutError)
    assert excinfo.value.attempts == 1 and fake.sleeps == []


def test_backoff_is_capped_exponential_with_full_jitter():
    top, _ = make_client(Script(ok({})), rng=lambda: 1.0, backoff_base=0.5, backoff_cap=4.0)
    assert [top.backoff_delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    bottom, _ = make_client(Script(ok({})), rng=lambda: 0.0)
    assert bottom.backoff_delay(5) == 0.0
    assert bottom.backoff_delay(5, retry_after=2.5) == 2.5  # the server's wait is a floor

    seeded = random.Random(42)
    client, fake = make_client(
        Script(httpx.Response(503)), rng=seeded.random, backoff_base=1.0, backoff_cap=5.0, max_retries=40
    )
    with pytest.raises(KomboRetriesExhaustedError):
        client.check_api_key()
    assert len(fake.sleeps) == 40
    assert max(fake.sleeps) <= 5.0
    assert len(set(fake.sleeps)) == 40  # jittered: no two waits alike
    assert min(fake.sleeps[5:]) < 2.5 < max(fake.sleeps[5:])  # spread over the whole [0, cap] range


def test_in_flight_limit_per_integration_is_never_exceeded():
    limit = 3
    lock = threading.Lock()
    current: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    def handler(request: httpx.Request) -> httpx.Response:
        integration = request.headers["X-Integration-Id"]
        with lock:
            current[integration] += 1
            peak[integration] = max(peak[integration], current[integration])
        time.sleep(0.01)
        with lock:
            current[integration] -= 1
        return ok({}, warnings=[])

    client = KomboClient(
        BASE_URL, API_KEY, transport=httpx.MockTransport(handler), max_in_flight_per_integration=limit
    )
    payload = ResultPayload(status="COMPLETED", result_url="https://r")

    def work(i: int) -> None:
        client.put_result(f"tool:integration{i % 2}", f"o{i}", payload)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(peak) == {"tool:integration0", "tool:integration1"}
    assert max(peak.values()) <= limit
    assert min(peak.values()) >= 2  # requests did run in parallel, up to the cap
    assert client.in_flight.in_flight("tool:integration0") == 0


def test_in_flight_limiter_adopts_lower_server_cap_and_times_out():
    limiter = InFlightLimiter(5)
    limiter.observe("a", {"concurrency-limit": "1", "concurrency-remaining": "0"})
    limiter.observe("b", {"concurrency-limit": "50"})
    assert (limiter.cap("a"), limiter.cap("b")) == (1, 5)
    with limiter.slot("a"):
        with pytest.raises(TimeoutError):
            with limiter.slot("a", timeout=0.01):
                pass
        with limiter.slot("b"), limiter.slot(None):
            assert limiter.in_flight("b") == 1
    assert limiter.in_flight("a") == 0


def test_rate_budget_spaces_requests():
    fake = FakeTime()
    budget = RateBudget(rate_per_second=10, burst=1, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        budget.acquire()
    assert fake.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert fake.now - 1000.0 == pytest.approx(0.4)


def test_rate_budget_allows_a_burst_then_refills():
    fake = FakeTime()
    budget = RateBudget(rate_per_second=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        budget.acquire()
    assert fake.sleeps == []
    budget.acquire()
    assert fake.sleeps == pytest.approx([0.5])


def test_rate_budget_unlimited_until_server_says_otherwise():
    fake = FakeTime()
    budget = RateBudget(clock=fake.clock, sleep=fake.sleep)
    for _ in range(100):
        budget.acquire()
    assert fake.sleeps == []
    budget.observe({"ratelimit-limit": "300", "ratelimit-remaining": "12", "ratelimit-reset": "40"})
    budget.acquire()
    assert fake.sleeps == [] and budget.server_remaining == 12 and budget.server_limit == 300
    budget.observe({"ratelimit-limit": "300", "ratelimit-remaining": "0", "ratelimit-reset": "40"})
    budget.acquire()
    assert fake.sleeps == [40.0]
    budget.acquire()
    assert fake.sleeps == [40.0]  # the window has reset


def test_rate_budget_pause_is_shared_by_threads():
    budget = RateBudget()
    budget.pause_for(0.2)
    waited: list[float] = []

    def worker() -> None:
        start = time.monotonic()
        budget.acquire()
        waited.append(time.monotonic() - start)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waited) == 4 and min(waited) >= 0.15


def test_rate_budget_gives_each_waiting_caller_its_own_slot_and_one_sleep():
    # Callers arriving at the same instant (a frozen clock; sleeps do not move it) from several threads: each
    # reserves its own start time under the lock, spaced 1/rate apart after the burst, and sleeps once until
    # it. A budget whose waiters re-poll for tokens would sleep again here (the clock never moves).
    frozen = 1000.0
    sleeps: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        name = threading.current_thread().name
        with lock:
            sleeps[name].append(seconds)
            if len(sleeps[name]) > 1:
                raise AssertionError(f"{name} slept again: {sleeps[name]}")

    budget = RateBudget(rate_per_second=50, burst=2, clock=lambda: frozen, sleep=sleep)
    waited: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def caller() -> None:
        start.wait()
        try:
            value = budget.acquire()
        except BaseException as exc:
            errors.append(exc)
            return
        with lock:
            waited.append(value)

    threads = [threading.Thread(target=caller, name=f"caller-{n}") for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors, errors
    # Two start at once (the burst), then one every 20 ms, each slot taken by exactly one caller.
    assert sorted(waited) == pytest.approx([0.0, 0.0] + [0.02 * n for n in range(1, 11)])
    assert all(len(values) == 1 for values in sleeps.values()) and len(sleeps) == 10


def test_rate_budget_waiter_honours_a_pause_that_starts_while_it_sleeps():
    fake = FakeTime()
    budget = RateBudget(rate_per_second=10, burst=1, clock=fake.clock, sleep=fake.sleep)
    budget.acquire()
    real_sleep = fake.sleep

    def sleep_then_429(seconds: float) -> None:
        if not fake.sleeps:
            budget.pause_for(2.0)  # another thread got a 429 meanwhile (paused until 1002.0)
        real_sleep(seconds)

    budget._sleep = sleep_then_429
    assert budget.acquire() == pytest.approx(2.0)
    assert fake.sleeps == pytest.approx([0.1, 1.9]) and fake.now == pytest.approx(1002.0)
    # The next slot is spaced from the one taken after the pause.
    budget._sleep = fake.sleep
    budget.acquire()
    assert fake.sleeps[-1] == pytest.approx(0.1)


def test_client_rate_limit_spaces_requests():
    script = Script(ok({"environment_id": "env"}))
    client, fake = make_client(script, rate_limit_per_second=4, rate_limit_burst=1)
    for _ in range(3):
        client.check_api_key()
    assert fake.sleeps == pytest.approx([0.25, 0.25])


def test_set_packages_returns_and_logs_warnings(caplog):
    script = Script(ok({}, warnings=[{"message": "Package p2 has no type mapping in Greenhouse"}]))
    client, _ = make_client(script)
    caplog.set_level(logging.INFO, logger="kombo_sync.kombo.client")
    warnings = client.set_packages(
        INTEGRATION,
        [
            Package(id="p1", name="TS", description="d", type="SKILLS_TEST"),
            {"id": "p2", "name": "Big five", "description": "d", "type": "BEHAVIORAL"},
        ],
    )
    assert warnings == ["Package p2 has no type mapping in Greenhouse"]
    assert "Package p2 has no type mapping" in caplog.text and API_KEY not in caplog.text
    request = script.requests[0]
    assert request.method == "PUT"
    assert json.loads(request.content) == {
        "packages": [
            {"id": "p1", "name": "TS", "description": "d", "type": "SKILLS_TEST"},
            {"id": "p2", "name": "Big five", "description": "d", "type": "BEHAVIORAL"},
        ]
    }


def test_put_result_sends_wire_json():
    script = Script(ok({}, warnings=[]))
    client, _ = make_client(script)
    payload = {
        "status": "COMPLETED",
        "result_url": "https://example.com",
        "completed_at": datetime(2023, 4, 4, tzinfo=UTC),
        "score": 90,
        "attributes": [{"type": "TEXT", "label": "Role fit", "value": "Excellent"}],
        "remote_fields": {"smartrecruiters": {"score_label": "High"}},
    }
    assert client.put_result(INTEGRATION, "B5KQKhAgTv6ZwzrfAbqbhipd", payload) == []
    request = script.requests[0]
    assert request.url.path == "/v1/assessment/orders/B5KQKhAgTv6ZwzrfAbqbhipd/result"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "status": "COMPLETED",
        "result_url": "https://example.com",
        "completed_at": "2023-04-04T00:00:00.000Z",
        "score": 90.0,
        "attributes": [{"type": "TEXT", "label": "Role fit", "value": "Excellent"}],
        "attachments": [],
        "remote_fields": {"smartrecruiters": {"scoreLabel": "High"}},
    }


def test_success_status_with_non_envelope_body_is_invalid_response():
    client, fake = make_client(Script(httpx.Response(200, text="<html>captive portal</html>")))
    with pytest.raises(KomboInvalidResponseError):
        client.check_api_key()
    assert fake.sleeps == []


def test_error_from_response_builds_typed_errors():
    envelope = {
        "status": "error",
        "error": {
            "code": "PLATFORM.RATE_LIMIT_EXCEEDED",
            "title": "Rate",
            "message": "slow down",
            "log_url": LOG_URL,
        },
    }
    error = error_from_response(429, envelope, {"Retry-After": "2", "RateLimit-Reset": "9"}, "GET", "/x")
    assert isinstance(error, KomboRateLimitError) and error.retriable
    assert (error.code, error.title, error.message, error.log_url) == (
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "Rate",
        "slow down",
        LOG_URL,
    )
    assert error.retry_after == 9.0  # the later of Retry-After and the rate window reset

    concurrency = error_from_response(
        429, {"error": {"code": "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", "message": "m"}}, {}, "PUT", "/y"
    )
    assert isinstance(concurrency, KomboConcurrencyLimitError) and concurrency.retry_after is None

    remote = error_from_response(
        502, {"error": {"code": "REMOTE.RATE_LIMIT_EXCEEDED", "message": "m"}}, None, "G", "/"
    )
    assert isinstance(remote, KomboRemoteError) and not isinstance(remote, KomboRateLimitError)

    bare = error_from_response(503, None, {"content-type": "text/html"}, "GET", "/z")
    assert isinstance(bare, KomboServerError) and bare.code is None and "503" in bare.message

    assert isinstance(error_from_response(429, None, {}, "GET", "/"), KomboRateLimitError)
    assert type(error_from_response(403, None, {}, "GET", "/")) is KomboFatalError
    assert isinstance(KomboTimeoutError("t"), KomboTransportError)
    assert issubclass(KomboTransportError, KomboRetriableError) and issubclass(KomboFatalError, KomboError)


@pytest.mark.parametrize(
    ("answers", "maybe_applied"),
    [
        # every attempt answered with a definite error: Kombo did not carry the write out
        ([kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE")] * 3, False),
        (
            [kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED"), kombo_error(400, "INTEGRATION.INVALID_INPUT")],
            False,
        ),
        # one attempt without an answer among definite errors: it may have been applied
        (
            [
                httpx.ReadTimeout("lost"),
                kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE"),
                kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE"),
            ],
            True,
        ),  # fmt: skip
        ([kombo_error(503, None), httpx.RemoteProtocolError("closed"), kombo_error(503, None)], True),
        # a gateway timeout says the work did not finish in time, not that it did not happen
        ([kombo_error(504, "PLATFORM.TASK_TIMED_OUT"), kombo_error(400, "INTEGRATION.INVALID_INPUT")], True),
    ],
)
def test_the_error_of_a_call_says_whether_some_attempt_may_have_been_applied(answers, maybe_applied):
    script = Script(*answers, answers[-1])
    client, _ = make_client(script, max_retries=len(answers) - 1)
    with pytest.raises(KomboError) as raised:
        client.put_result(
            INTEGRATION, "order-1", {"status": "COMPLETED", "result_url": "https://x.example/r"}
        )
    assert raised.value.maybe_applied is maybe_applied
    assert len(script.requests) == len(answers)
