"""The asyncio side of the client's limits: the rate budget's `acquire_async` and the in-flight cap's
`slot_async`, sharing their state with the threads' `acquire` and `slot`. No network."""

import asyncio
import threading

import pytest

from kombo_sync.kombo.limits import InFlightLimiter, RateBudget
from tests.support.fake_time import FakeTime


def test_acquire_async_spaces_requests_like_acquire_and_shares_the_budget():
    fake = FakeTime()
    budget = RateBudget(rate_per_second=10, burst=1, clock=fake.clock, sleep=fake.sleep)

    async def four() -> list[float]:
        return [await budget.acquire_async(fake.asleep) for _ in range(4)]

    assert asyncio.run(four()) == pytest.approx([0.0, 0.1, 0.1, 0.1])
    # A thread's acquire takes the next slot of the same budget.
    assert budget.acquire() == pytest.approx(0.1)
    assert fake.now - 1000.0 == pytest.approx(0.4)


def test_acquire_async_honours_a_pause_that_starts_while_it_sleeps():
    fake = FakeTime()
    budget = RateBudget(rate_per_second=10, burst=1, clock=fake.clock, sleep=fake.sleep)
    budget.acquire()

    async def sleep_then_429(seconds: float) -> None:
        if not fake.sleeps:
            budget.pause_for(2.0)  # another request got a 429 meanwhile (paused until 1002.0)
        fake.sleep(seconds)

    assert asyncio.run(budget.acquire_async(sleep_then_429)) == pytest.approx(2.0)
    assert fake.sleeps == pytest.approx([0.1, 1.9])


def test_slot_async_caps_coroutines_per_integration():
    limiter = InFlightLimiter(3)
    peak = {"a": 0, "b": 0}

    async def one(integration: str) -> None:
        async with limiter.slot_async(integration):
            peak[integration] = max(peak[integration], limiter.in_flight(integration))
            await asyncio.sleep(0.002)

    async def many() -> None:
        await asyncio.gather(*(one("ab"[i % 2]) for i in range(40)))

    asyncio.run(many())
    assert peak == {"a": 3, "b": 3}
    assert (limiter.in_flight("a"), limiter.in_flight("b")) == (0, 0)


def test_slot_async_shares_the_count_with_threads_and_is_woken_by_a_thread():
    limiter = InFlightLimiter(1)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with limiter.slot("a"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)

    async def wait_for_slot() -> bool:
        async def take() -> None:
            async with limiter.slot_async("a"):
                assert limiter.in_flight("a") == 1

        task = asyncio.create_task(take())
        await asyncio.sleep(0.05)
        blocked = not task.done()  # the thread holds the only slot
        release.set()  # the thread's release wakes the coroutine from another thread
        await asyncio.wait_for(task, 5)
        return blocked

    assert asyncio.run(wait_for_slot()) is True
    thread.join()
    assert limiter.in_flight("a") == 0


def test_a_lower_server_cap_and_a_cancelled_waiter_leave_no_slot_stranded():
    limiter = InFlightLimiter(2)

    async def scenario() -> list[str]:
        order: list[str] = []
        gate = asyncio.Event()

        async def use(name: str) -> None:
            async with limiter.slot_async("a"):
                order.append(name)
                await gate.wait()

        first, second = asyncio.create_task(use("first")), asyncio.create_task(use("second"))
        await asyncio.sleep(0.01)
        limiter.observe("a", {"concurrency-limit": "1"})  # Kombo lowers the cap: both keep their slots
        waiting = [asyncio.create_task(use(f"waiter{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        waiting[0].cancel()  # a waiter cancelled while it waits
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second, *waiting[1:]), 5)
        assert waiting[0].cancelled()
        return order

    order = asyncio.run(scenario())
    assert order == ["first", "second", "waiter1", "waiter2"]
    assert limiter.in_flight("a") == 0 and limiter.cap("a") == 1
