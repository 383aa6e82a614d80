"""Client-side pacing of billing requests: one limiter per credential, two levels of budget.

Stripe limits requests per account at two levels: a global cap (25 a second in test mode, 100
live) and a budget per endpoint ("API endpoints have a default limit of 25 requests per
second", Search 20; creating and updating a customer are two endpoints). Chargebee limits a
site per minute (150 on test sites). Every target paces its requests here, and every 429 goes
through `RateLimiter.call`, so there is one code path for slowing down and retrying.

Each level is a GCRA token bucket (the "virtual scheduling" form: a theoretical arrival time
moved on by 1/rate per request, `burst` requests allowed back to back), so a request waits for
the later of its two levels and then counts against both. A 429 lowers the level it names
(`Stripe-Rate-Limited-Reason: endpoint-rate` lowers that endpoint's budget, anything else the
global one) by about 10%, at most once per round trip so a burst of in-flight requests refused
together counts as one signal; a `Retry-After` pauses the whole credential. Each success
recovers a small fixed step (additive increase), so the pace creeps back up to its ceiling.

Paced as sent, counted as arrived: Stripe (and the sandbox) count a request when it arrives, and
on a loaded host requests bunch on their way there, so two guards keep a bunch within the
service's burst (measured by `bench/pacing_probe.py`):

- the ceiling of each level is `HEADROOM` of its budget, not all of it. At the full budget the
  service's bucket refills exactly as fast as it is drawn, so once one bunch has emptied it,
  every later request that arrives a little early is refused; a few percent under the budget
  refill it between bunches;
- a thread that wakes from its booked slot more than `LATE_SLOTS` slots late (its CPU was taken)
  books again instead of sending on top of the requests booked after it, and slows the pace
  down as a 429 would: the host is too loaded to keep it.

Clock, sleep and jitter are injected: the tables in the tests move time by hand and never wait.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from connector.billing.base import RateLimited

log = structlog.get_logger("connector.billing.ratelimit")

T = TypeVar("T")

#: a 429 multiplies the refused level's rate by this
SLOWDOWN = 0.9
#: never slower than this share of the budget (a storm of 429s still lets requests through)
FLOOR = 0.05
#: each success gives back this share of the budget (50 successes undo one slowdown)
RECOVERY_STEP = 0.002
#: each level is paced at this share of its budget: the rest refills the service's burst, which
#: requests bunched on their way there (a loaded host, a busy proxy) use up
HEADROOM = 0.96
#: a thread that wakes this many slots (1/pace) after the one it booked books again, at most
#: `REBOOKS` times: sent now, it would arrive on top of the requests booked after it
LATE_SLOTS = 2.0
REBOOKS = 3
#: a late wake also slows the pace down, as a 429 does (at most once per round trip): a host
#: that cannot wake its threads on time does not send on time either, and its bunches reach
#: Stripe's bucket before any 429 could say so
SLOW_WHEN_LATE = True
#: how often one request is retried after a 429 before it becomes `RateLimited`
RATE_LIMIT_RETRIES = 6
#: longest Retry-After honoured (a larger one is a misconfigured proxy, not a pace)
RETRY_AFTER_MAX = 60.0
#: the weight of the newest request in the latency average
LATENCY_WEIGHT = 0.2

GLOBAL = "global-rate"
ENDPOINT = "endpoint-rate"


@dataclass(frozen=True, slots=True)
class Budget:
    """The caps one credential is paced to.

    `rate` is the global cap in requests a second. `endpoints` names endpoints whose budget
    differs from `endpoint_rate`; `endpoint_rate=None` means the service has no per-endpoint
    level (Chargebee). `burst` requests may go back to back at each level.
    """

    rate: float
    endpoint_rate: float | None = None
    endpoints: Mapping[str, float] = field(default_factory=dict)
    burst: float = 1.0

    def for_endpoint(self, endpoint: str) -> float | None:
        return self.endpoints.get(endpoint, self.endpoint_rate)

    def tightest(self, other: Budget) -> Budget:
        """The stricter of two budgets, level by level (two accounts on one credential)."""

        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        names = set(self.endpoints) | set(other.endpoints)
        return Budget(
            rate=min(self.rate, other.rate),
            endpoint_rate=low(self.endpoint_rate, other.endpoint_rate),
            endpoints={
                n: r
                for n in names
                if (r := low(self.for_endpoint(n), other.for_endpoint(n))) is not None
            },
            burst=min(self.burst, other.burst),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a 429 said, read from the SDK's exception by the target."""

    code: str  # rate_limit, lock_timeout, api_request_limit_exceeded...
    retry_after: float | None = None
    reason: str | None = None  # Stripe-Rate-Limited-Reason, when sent


class Bucket:
    """One level: GCRA with a rate that slows down on 429 and recovers step by step.

    `max_rate` is the budget; the pace never goes above `ceiling` (`HEADROOM` of it)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.max_rate = rate
        self.rate = rate * HEADROOM
        self.burst = max(1.0, burst)
        self.tat = -math.inf  # theoretical arrival time of the next request
        self.slowed_at = -math.inf

    def earliest(self, now: float) -> float:
        return max(now, self.tat - (self.burst - 1.0) / self.rate)

    def take(self, at: float) -> None:
        self.tat = max(self.tat, at) + 1.0 / self.rate

    def cap(self, rate: float, burst: float) -> None:
        self.max_rate = min(self.max_rate, rate)
        self.rate = min(self.rate, self.ceiling)
        self.burst = min(self.burst, max(1.0, burst))

    def slow_down(self, now: float, round_trip: float) -> bool:
        # Requests in flight together that are refused together are one signal, not many.
        if now - self.slowed_at < round_trip:
            return False
        self.slowed_at = now
        self.rate = max(self.max_rate * FLOOR, self.rate * SLOWDOWN)
        return True

    @property
    def ceiling(self) -> float:
        return self.max_rate * HEADROOM

    def recover(self) -> None:
        if self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.max_rate * RECOVERY_STEP)


class RateLimiter:
    """Paces every request of one credential; thread-safe (writers share it)."""

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._global = Bucket(budget.rate, budget.burst)
        self._endpoints: dict[str, Bucket] = {}
        self._paused_until = -math.inf
        #: average seconds a request took (None until one finished)
        self.latency: float | None = None
        #: 429s met, by Stripe-Rate-Limited-Reason (or "unknown")
        self.refused: Counter[str] = Counter()
        #: times a level was slowed down: by a 429 (several refused in one round trip count
        #: once) or by threads woken too late for their slots
        self.slowdowns = 0
        #: requests that woke too late for their slot and booked another
        self.rebooked = 0

    # --- levels --------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The global pace now (below the budget after a 429)."""
        return self._global.rate

    @property
    def max_rate(self) -> float:
        """The global budget (the pace stays at `HEADROOM` of it or below)."""
        return self._global.max_rate

    def endpoint_rate(self, endpoint: str) -> float | None:
        with self._lock:
            bucket = self._endpoint(endpoint)
            return bucket.rate if bucket else None

    def cap(self, budget: Budget) -> None:
        """Never faster than `budget` either (the slowest account sharing this credential)."""
        with self._lock:
            self.budget = self.budget.tightest(budget)
            self._global.cap(self.budget.rate, self.budget.burst)
            for name, bucket in self._endpoints.items():
                rate = self.budget.for_endpoint(name)
                if rate is not None:
                    bucket.cap(rate, self.budget.burst)

    def _binding(self, endpoint: str) -> Bucket:
        """The level that paces a request to `endpoint` now: the slower of its two."""
        per = self._endpoint(endpoint)
        return per if per is not None and per.rate < self._global.rate else self._global

    def _pace(self, endpoint: str) -> float:
        return self._binding(endpoint).rate

    def _endpoint(self, endpoint: str) -> Bucket | None:
        bucket = self._endpoints.get(endpoint)
        if bucket is None:
            rate = self.budget.for_endpoint(endpoint)
            if rate is None:
                return None
            bucket = self._endpoints[endpoint] = Bucket(rate, self.budget.burst)
        return bucket

    # --- pacing --------------------------------------------------------------------------

    def reserve(self, endpoint: str) -> float:
        """Book the next slot for `endpoint` on both levels; the seconds to wait for it."""
        now, start = self._book(endpoint)
        return start - now

    def _book(self, endpoint: str) -> tuple[float, float]:
        with self._lock:
            now = self._clock()
            per = self._endpoint(endpoint)
            start = max(now, self._paused_until, self._global.earliest(now))
            if per is not None:
                start = max(start, per.earliest(now))
            self._global.take(start)
            if per is not None:
                per.take(start)
            return now, start

    def wait(self, endpoint: str) -> None:
        """Sleep until this request's slot. A thread woken well after its slot (a loaded CPU
        wakes several at once) books a new one rather than send with the ones booked after it:
        the slot it missed is lost, as it was to the service's bucket, which was full already."""
        for attempt in range(REBOOKS + 1):
            now, start = self._book(endpoint)
            if start > now:
                self._sleep(start - now)
            if attempt == REBOOKS:
                return  # late again and again: send rather than starve this request
            with self._lock:
                now = self._clock()
                if now - start <= LATE_SLOTS / self._pace(endpoint):
                    return
                self.rebooked += 1
                if SLOW_WHEN_LATE and self._binding(endpoint).slow_down(now, self.latency or 0.0):
                    self.slowdowns += 1

    def succeeded(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            self._global.recover()
            per = self._endpoint(endpoint)
            if per is not None:
                per.recover()
            seconds = max(0.0, seconds)
            self.latency = (
                seconds
                if self.latency is None
                else (1 - LATENCY_WEIGHT) * self.latency + LATENCY_WEIGHT * seconds
            )

    def refused_with(self, endpoint: str, refusal: Refusal) -> None:
        """A 429: slow the level it names down and honour its Retry-After."""
        with self._lock:
            now = self._clock()
            self.refused[refusal.reason or "unknown"] += 1
            per = self._endpoint(endpoint)
            level = per if refusal.reason == ENDPOINT and per is not None else self._global
            if level.slow_down(now, self.latency or 0.0):
                self.slowdowns += 1
            if refusal.retry_after is not None:
                self._paused_until = max(self._paused_until, now + refusal.retry_after)

    def in_flight(self, most: int) -> int:
        """How many requests to keep in flight: the pace times the latency seen (Little's
        law), a quarter more and one spare, within 1..`most`. Two until a latency is known."""
        with self._lock:
            per = [b.rate for b in self._endpoints.values()]
            rate = self._global.rate
            latency = self.latency
        if latency is None:
            return max(1, min(most, 2))
        # The endpoints in use bound the pace too; more threads than that only queue here.
        pace = min(rate, sum(per)) if per else rate
        return max(1, min(most, math.ceil(pace * latency * 1.25) + 1))

    # --- one request, with its retries ---------------------------------------------------

    def call(
        self,
        endpoint: str,
        send: Callable[[], T],
        refusal: Callable[[BaseException], Refusal | None],
        *,
        who: str,
        retries: int | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> T:
        """Send once the pace allows; on a 429 (`refusal` returns what it said) slow down and
        send again, up to `retries` times, then raise `RateLimited` naming `who`. Anything
        else `send` raises goes to the caller unchanged."""
        most = RATE_LIMIT_RETRIES if retries is None else retries
        attempt = 0
        while True:
            self.wait(endpoint)
            started = self._clock()
            try:
                result = send()
            except Exception as exc:
                said = refusal(exc)
                if said is None:
                    raise
                if said.retry_after is not None:
                    said = Refusal(said.code, min(RETRY_AFTER_MAX, said.retry_after), said.reason)
                self.refused_with(endpoint, said)
                if on_refused is not None:
                    on_refused()
                attempt += 1
                log.warning(
                    "billing.rate_limited",
                    billing_account=who,
                    endpoint=endpoint,
                    code=said.code,
                    reason=said.reason,
                    retry_after=said.retry_after,
                    attempt=attempt,
                    pace=round(self.rate, 3),
                )
                if attempt > most:
                    raise RateLimited(
                        f"billing account '{who}' kept refusing {endpoint} with 429 "
                        f"({said.code}{', ' + said.reason if said.reason else ''}) after "
                        f"{most} retries; the record is retried on a later run",
                        code=said.code,
                        retry_after=said.retry_after,
                        billing_account=who,
                    ) from None
                if said.retry_after is None:
                    # No advice: back off this request exponentially (with jitter) on top of
                    # the slower pace, so a storm does not use up the retries at once.
                    self._sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + self._jitter() / 2))
                continue
            self.succeeded(endpoint, self._clock() - started)
            return result


# Stripe and Chargebee limit requests per credential, not per billing account: every account an
# organization key drives draws on that key's budget. So limiters belong to the credential (its
# API base and key); accounts sharing one share the limiter. Held weakly: a limiter lives as
# long as a target that uses it.
_LIMITERS: weakref.WeakValueDictionary[str, RateLimiter] = weakref.WeakValueDictionary()
_LIMITERS_LOCK = threading.Lock()


def limiter_for_credential(
    api_base: str,
    key: str,
    budget: Budget,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RateLimiter:
    # A digest, so no key is kept as a dictionary key beside the client that needs it.
    credential = hashlib.sha256(f"{api_base}\0{key}".encode()).hexdigest()
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(credential)
        if limiter is None:
            limiter = RateLimiter(budget, clock=clock, sleep=sleep)
            _LIMITERS[credential] = limiter
        else:
            limiter.cap(budget)
        return limiter
