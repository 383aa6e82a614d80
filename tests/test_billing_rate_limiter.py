"""The shared billing rate limiter, as tables: a hand-moved clock, recorded sleeps, no waiting.

Two levels (a global cap and per-endpoint budgets) with burst, each paced at `HEADROOM` of its
budget; a 429 slows the level it names by about 10% (once per round trip), honours
Retry-After, and successes recover step by step up to that ceiling. Times below are written in
slots of the budget and divided by HEADROOM where the pace sets them.
"""

from __future__ import annotations

import heapq
from typing import Any

import pytest

from connector.billing.base import RateLimited
from connector.billing.ratelimit import (
    ENDPOINT,
    GLOBAL,
    HEADROOM,
    LATE_SLOTS,
    REBOOKS,
    RECOVERY_STEP,
    SLOWDOWN,
    Budget,
    RateLimiter,
    Refusal,
)


class Clock:
    """Time that moves only when the limiter sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def limiter(budget: Budget, clock: Clock) -> RateLimiter:
    return RateLimiter(budget, clock=clock, sleep=clock.sleep, jitter=lambda: 1.0)


def starts(lim: RateLimiter, clock: Clock, endpoints: list[str]) -> list[float]:
    """When each request would be sent, the clock standing still (every caller books at once)."""
    return [round(clock.now + lim.reserve(e), 6) for e in endpoints]


@pytest.mark.parametrize(
    ("budget", "endpoints", "expected"),
    [
        # Global 10/s, burst 1: one every 100 ms.
        (Budget(rate=10), ["a"] * 4, [0.0, 0.1, 0.2, 0.3]),
        # Burst 3: three at once, then the rate.
        (Budget(rate=10, burst=3), ["a"] * 5, [0.0, 0.0, 0.0, 0.1, 0.2]),
        # An endpoint budget below the global cap paces that endpoint...
        (Budget(rate=100, endpoint_rate=25), ["c"] * 3, [0.0, 0.04, 0.08]),
        # ...while another endpoint has a budget of its own (create and update are two).
        (Budget(rate=100, endpoint_rate=25), ["c", "u", "c", "u"], [0.0, 0.01, 0.04, 0.05]),
        # Named endpoint budgets (Search 20) differ from the default.
        (Budget(rate=100, endpoint_rate=25, endpoints={"s": 20}), ["s", "s"], [0.0, 0.05]),
        # The global cap binds the sum of the endpoints: 4 endpoints at 25 against 50 global.
        (Budget(rate=50, endpoint_rate=25), ["a", "b", "c", "d"], [0.0, 0.02, 0.04, 0.06]),
    ],
)
def test_requests_are_spaced_by_the_tighter_of_both_levels(
    budget: Budget, endpoints: list[str], expected: list[float]
) -> None:
    clock = Clock()
    paced = [t / HEADROOM for t in expected]
    assert starts(limiter(budget, clock), clock, endpoints) == pytest.approx(paced, abs=1e-6)


def test_a_burst_refills_at_the_rate() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=10, burst=3), clock)
    assert starts(lim, clock, ["a"] * 3) == [0.0, 0.0, 0.0]
    clock.now = 1.0  # a quiet second: the burst is back, no more
    assert starts(lim, clock, ["a"] * 4) == pytest.approx(
        [1.0, 1.0, 1.0, 1.0 + 0.1 / HEADROOM], abs=1e-6
    )


@pytest.mark.parametrize(
    ("reason", "global_rate", "endpoint_rate"),
    [
        (GLOBAL, 100 * HEADROOM * SLOWDOWN, 25 * HEADROOM),
        (ENDPOINT, 100 * HEADROOM, 25 * HEADROOM * SLOWDOWN),
        (None, 100 * HEADROOM * SLOWDOWN, 25 * HEADROOM),  # no header: the global level
    ],
)
def test_a_429_slows_down_the_level_it_names_by_a_tenth(
    reason: str | None, global_rate: float, endpoint_rate: float
) -> None:
    clock = Clock()
    lim = limiter(Budget(rate=100, endpoint_rate=25), clock)
    lim.reserve("customers.create")
    lim.refused_with("customers.create", Refusal("rate_limit", reason=reason))
    assert lim.rate == pytest.approx(global_rate)
    assert lim.endpoint_rate("customers.create") == pytest.approx(endpoint_rate)
    assert lim.refused[reason or "unknown"] == 1


def test_429s_within_one_round_trip_count_once_then_successes_recover_step_by_step() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=20), clock)
    lim.succeeded("a", 0.25)  # the latency seen: a round trip of 250 ms
    for _ in range(5):  # five requests in flight refused together
        lim.refused_with("a", Refusal("rate_limit", reason=GLOBAL))
    assert lim.rate == pytest.approx(20 * HEADROOM * SLOWDOWN)
    clock.now = 0.3  # a round trip later: a new signal
    lim.refused_with("a", Refusal("rate_limit", reason=GLOBAL))
    assert lim.rate == pytest.approx(20 * HEADROOM * SLOWDOWN**2)
    assert lim.slowdowns == 2 and lim.refused[GLOBAL] == 6
    before = lim.rate
    lim.succeeded("a", 0.25)
    assert lim.rate == pytest.approx(before + 20 * RECOVERY_STEP)
    for _ in range(10_000):
        lim.succeeded("a", 0.25)
    # Back up to the ceiling, never to the budget itself: the rest refills Stripe's burst.
    assert lim.rate == pytest.approx(20 * HEADROOM) and lim.max_rate == 20


def test_retry_after_pauses_every_request_of_the_credential() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=100), clock)
    lim.refused_with("a", Refusal("rate_limit", retry_after=2.0))
    assert lim.reserve("b") == pytest.approx(2.0)


def _sender(answers: list[Any]) -> Any:
    """send() for `call`: each answer is returned, or raised when it is an exception."""

    def send() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return send


class Refused(Exception):
    def __init__(self, retry_after: float | None = None, reason: str | None = None) -> None:
        self.retry_after, self.reason = retry_after, reason


def _refusal(exc: BaseException) -> Refusal | None:
    if isinstance(exc, Refused):
        return Refusal("rate_limit", exc.retry_after, exc.reason)
    return None


def test_call_retries_429s_honouring_retry_after_and_backing_off_without_it() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=1000), clock)
    send = _sender([Refused(retry_after=3.0), Refused(), "ok"])
    assert lim.call("a", send, _refusal, who="acct") == "ok"
    # Retry-After 3 s honoured by the pace; then an exponential backoff (0.25 * 2**2, no jitter).
    assert 3.0 in clock.sleeps and 1.0 in clock.sleeps
    assert lim.refused["unknown"] == 2


def test_call_gives_up_after_its_retries_naming_the_account_and_the_reason() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=1000), clock)
    send = _sender([Refused(retry_after=0.0, reason=ENDPOINT)] * 3)
    with pytest.raises(RateLimited, match=r"'acct'.*429 \(rate_limit, endpoint-rate\)") as info:
        lim.call("a", send, _refusal, who="acct", retries=2)
    assert info.value.billing_account == "acct" and info.value.code == "rate_limit"


def test_call_passes_other_errors_through_untouched() -> None:
    clock = Clock()
    lim = limiter(Budget(rate=1000), clock)
    with pytest.raises(KeyError):
        lim.call("a", _sender([KeyError("x")]), _refusal, who="acct")
    assert not lim.refused


@pytest.mark.parametrize(
    ("budget", "latency", "most", "expected"),
    [
        (Budget(rate=25), None, 32, 2),  # nothing seen yet: start small
        (Budget(rate=25), 0.25, 32, 9),  # paced 24/s x 0.25 s = 6 -> x1.25, +1 = 9
        (Budget(rate=100), 0.25, 24, 24),  # would be 31: the configured most
        (Budget(rate=100, endpoint_rate=25), 0.25, 32, 9),  # one endpoint in use binds it
        (Budget(rate=25), 0.25, 1, 1),  # max_in_flight 1: serial
    ],
)
def test_requests_in_flight_come_from_the_pace_and_the_latency(
    budget: Budget, latency: float | None, most: int, expected: int
) -> None:
    lim = limiter(budget, Clock())
    lim.reserve("customers.create")
    if latency is not None:
        lim.succeeded("customers.create", latency)
    assert lim.in_flight(most) == expected


def test_two_accounts_on_one_credential_are_held_to_the_tighter_budget() -> None:
    lim = limiter(Budget(rate=100, endpoint_rate=25, endpoints={"s": 20}), Clock())
    lim.cap(Budget(rate=30, endpoint_rate=100, endpoints={"c": 10}))
    assert lim.max_rate == 30
    paced = {e: lim.endpoint_rate(e) for e in ("c", "s", "other")}
    assert paced == pytest.approx({"c": 10 * HEADROOM, "s": 20 * HEADROOM, "other": 25 * HEADROOM})


def test_endpoint_limits_in_config_raise_the_budgets_and_refuse_unknown_endpoints() -> None:
    from pydantic import ValidationError

    from connector.billing.stripe import budget_of
    from connector.config import BillingAccountConfig
    from connector.errors import ConfigError

    raised = budget_of(
        BillingAccountConfig(
            id="live", max_requests_per_second=100, endpoint_limits={"customers.create": 100}
        )
    )
    assert raised.rate == 100 and raised.for_endpoint("customers.create") == 100
    assert raised.for_endpoint("customers.update") == 25  # Stripe's default per endpoint
    assert raised.for_endpoint("customers.search") == 20
    with pytest.raises(ConfigError, match=r"customers\.delete.*customers\.create"):
        budget_of(BillingAccountConfig(id="x", endpoint_limits={"customers.delete": 5}))
    with pytest.raises(ValidationError, match=r"customers\.create or customers\.update"):
        BillingAccountConfig(id="x", endpoint_limits={"POST /v1/customers": 5})
    with pytest.raises(ValidationError, match="max_in_flight"):
        BillingAccountConfig(id="x", max_in_flight=0)


def _stalled_once(clock: Clock, stall: float, meanwhile: Any = None) -> Any:
    """sleep() whose first call comes back `stall` seconds late (a loaded CPU), after running
    `meanwhile` (other threads booking while this one sleeps)."""
    calls = [0]

    def sleep(seconds: float) -> None:
        calls[0] += 1
        if calls[0] == 1:
            if meanwhile is not None:
                meanwhile()
            seconds += stall
        clock.sleep(seconds)

    return sleep


def test_a_thread_woken_late_gives_its_slot_up_and_books_behind_the_ones_booked_meanwhile() -> None:
    clock = Clock()
    slot = 1 / (10 * HEADROOM)
    others: list[float] = []
    lim = RateLimiter(
        Budget(rate=10),
        clock=clock,
        sleep=_stalled_once(
            clock, 3 * slot, lambda: others.extend(clock.now + lim.reserve("a") for _ in range(3))
        ),
    )
    lim.reserve("a")  # one request sent at 0
    lim.wait("a")  # booked for slot 1, woken at slot 4: slots 2..4 were booked meanwhile
    assert others == pytest.approx([2 * slot, 3 * slot, 4 * slot])
    # It went in slot 5, after them, rather than in slot 4 on top of them; slot 1 is lost.
    assert clock.now == pytest.approx(5 * slot) and lim.rebooked == 1
    # And a host that late slows the pace down, as a 429 would.
    assert lim.slowdowns == 1 and lim.rate == pytest.approx(10 * HEADROOM * SLOWDOWN)
    assert clock.now + lim.reserve("a") == pytest.approx(5 * slot + slot / SLOWDOWN)


@pytest.mark.parametrize(
    ("stall_slots", "rebooked"), [(0.5, 0), (LATE_SLOTS, 0), (LATE_SLOTS + 0.5, 1)]
)
def test_a_wake_within_a_few_slots_of_its_own_is_sent(stall_slots: float, rebooked: int) -> None:
    clock = Clock()
    slot = 1 / (10 * HEADROOM)
    lim = RateLimiter(Budget(rate=10), clock=clock, sleep=_stalled_once(clock, stall_slots * slot))
    lim.reserve("a")
    lim.wait("a")
    assert lim.rebooked == rebooked


def test_a_request_late_every_time_is_sent_after_its_last_booking() -> None:
    clock = Clock()
    slot = 1 / (10 * HEADROOM)

    def always_late(seconds: float) -> None:
        for _ in range(10):  # others book while this one sleeps...
            lim.reserve("a")
        clock.sleep(seconds + 5 * slot)  # ...and this one wakes five slots late, every time

    lim = RateLimiter(Budget(rate=10), clock=clock, sleep=always_late)
    lim.reserve("a")
    lim.wait("a")
    assert lim.rebooked == REBOOKS  # then sent: a loaded host slows a request, never drops it


def _refused_by_stripe(arrivals: list[float], budget: float, burst: float, retry: float) -> int:
    """Stripe's bucket (the sandbox's) over the instants requests arrive, each refused one
    arriving again `retry` seconds later: how many 429s it answers."""
    from connector.sandbox.http import TokenBucket

    now = [0.0]
    bucket = TokenBucket(budget, burst, clock=lambda: now[0])
    queue = list(arrivals)
    heapq.heapify(queue)
    refused = 0
    while queue:
        now[0] = heapq.heappop(queue)
        if not bucket.take():
            refused += 1
            heapq.heappush(queue, now[0] + retry)
    return refused


def test_pacing_under_the_budget_lets_stripes_burst_refill_after_a_bunch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 a second against Stripe's 100 with a burst of 5: the requests sent in 80 ms are held
    up on their way (a loaded host) and arrive together, emptying Stripe's bucket, and the
    others arrive 2 ms early or late in turn. Paced at the whole budget the bucket never
    refills, so early arrivals and the retries of the refused ones are refused again and again;
    at HEADROOM of it the bucket is back within a second."""
    import connector.billing.ratelimit as ratelimit

    def refused(headroom: float) -> int:
        monkeypatch.setattr(ratelimit, "HEADROOM", headroom)
        clock = Clock()
        sent = starts(limiter(Budget(rate=100), clock), clock, ["customers.create"] * 300)
        arrivals = [0.58 if 0.5 <= t < 0.58 else t + 0.002 * (-1) ** i for i, t in enumerate(sent)]
        return _refused_by_stripe(arrivals, 100, 5, retry=0.25)

    full, under = refused(1.0), refused(HEADROOM)
    assert full >= 40 and under * 4 <= full
