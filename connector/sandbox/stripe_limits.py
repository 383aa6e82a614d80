"""Stripe's request-rate limiter as the Stripe sandbox enforces it: a global and a per-endpoint level.

Stripe (docs.stripe.com/rate-limits): "rate limits are measured in API requests per second,
per Stripe account"; the global limit is 100 a second in live mode and 25 in a sandbox (test
mode); "API endpoints have a default limit of 25 requests per second", Search has 20; "Stripe
considers each named API operation a separate endpoint", so creating a customer
(`POST /v1/customers`) and updating one (`POST /v1/customers/{customer}`) are two endpoints,
and every customer id counts against the one update endpoint. A request is let through only
when both levels have room; it counts against both.

A 429 carries Stripe's `rate_limit` error and the `Stripe-Rate-Limited-Reason` header saying
which level refused it (`global-rate` or `endpoint-rate`; Stripe also sends
`global-concurrency`, `endpoint-concurrency` and `resource-specific`, which this sandbox
does not model). The header values come from public summaries of Stripe's rate-limit page;
the sandbox could not confirm whether Stripe words the error message differently per level,
so both levels answer Stripe's one documented message.

Deviation, on purpose: buckets belong to the *credential's owner*, not to the account a
request lands in. An account key paces its own account (or, as a Connect platform, itself
and the accounts it acts for); an organization key (`sk_org_...`) paces every account it
reaches with one bucket. That is what the connector assumes ("pacing is per credential") and
what the sandbox must show it. Each bucket holds `burst` tokens (Stripe's limiter tolerates
short bursts; a burst of 1 makes 0.9 of the cap unreachable for a client with any jitter).
The clock is injectable: tests move it by hand and never wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from connector.sandbox.http import Clock, TokenBucket

LIVE_GLOBAL_RATE = 100.0
TEST_GLOBAL_RATE = 25.0
ENDPOINT_RATE = 25.0
SEARCH_ENDPOINT = "GET /v1/customers/search"
#: endpoints whose default budget differs from `ENDPOINT_RATE`
DEFAULT_ENDPOINT_RATES: Mapping[str, float] = {SEARCH_ENDPOINT: 20.0}
DEFAULT_BURST = 5.0

GLOBAL_RATE = "global-rate"
ENDPOINT_RATE_REASON = "endpoint-rate"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The caps of one limiter owner. `global_rate=None` means Stripe's default for the mode."""

    burst: float = DEFAULT_BURST
    global_rate: float | None = None
    endpoint_rate: float = ENDPOINT_RATE
    endpoint_rates: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ENDPOINT_RATES)
    )

    def global_for(self, livemode: bool) -> float:
        if self.global_rate is not None:
            return self.global_rate
        return LIVE_GLOBAL_RATE if livemode else TEST_GLOBAL_RATE

    def endpoint_for(self, endpoint: str) -> float:
        return self.endpoint_rates.get(endpoint, self.endpoint_rate)

    def overridden(self, spec: Mapping[str, Any] | None) -> RateLimits:
        """These limits with an account's raised (or lowered) ones, as a data file states them:
        `{"global": 100, "endpoint": 100, "endpoints": {"POST /v1/customers": 50}, "burst": 10}`."""
        if not spec:
            return self
        unknown = set(spec) - {"global", "endpoint", "endpoints", "burst"}
        if unknown:
            raise ValueError(
                f"rate_limits: unknown key(s) {sorted(unknown)}; use global, endpoint, endpoints, burst"
            )
        endpoints = dict(self.endpoint_rates)
        for name, rate in (spec.get("endpoints") or {}).items():
            endpoints[str(name)] = _positive(rate, f"rate_limits.endpoints[{name}]")
        return replace(
            self,
            burst=_positive(spec.get("burst", self.burst), "rate_limits.burst"),
            global_rate=(
                _positive(spec["global"], "rate_limits.global")
                if spec.get("global") is not None
                else self.global_rate
            ),
            endpoint_rate=_positive(
                spec.get("endpoint", self.endpoint_rate), "rate_limits.endpoint"
            ),
            endpoint_rates=endpoints,
        )


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected a number of requests per second, got {value!r}"
        ) from None
    if number <= 0:
        raise ValueError(f"{name}: must be above 0, got {value!r}")
    return number


class StripeLimiter:
    """Buckets per owner (global) and per (owner, endpoint), made on first use."""

    def __init__(self, limits: RateLimits, *, clock: Clock | None = None) -> None:
        self.limits = limits
        self.clock: Clock = clock or time.monotonic
        self._global: dict[str, TokenBucket] = {}
        self._endpoint: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        #: 429s answered, by reason
        self.refused: dict[str, int] = {GLOBAL_RATE: 0, ENDPOINT_RATE_REASON: 0}

    def admit(
        self, owner: str, endpoint: str, *, livemode: bool, limits: RateLimits | None = None
    ) -> str | None:
        """Take one token of each level and return None, or take none and return the reason."""
        own = limits or self.limits
        with self._lock:
            glob = self._global.get(owner)
            if glob is None:
                glob = self._global[owner] = TokenBucket(
                    own.global_for(livemode), own.burst, clock=self.clock
                )
            per = self._endpoint.get((owner, endpoint))
            if per is None:
                per = self._endpoint[(owner, endpoint)] = TokenBucket(
                    own.endpoint_for(endpoint), own.burst, clock=self.clock
                )
            # Both are checked before either is taken: a request refused by one level does
            # not use up the other's budget.
            if not glob.available():
                self.refused[GLOBAL_RATE] += 1
                return GLOBAL_RATE
            if not per.available():
                self.refused[ENDPOINT_RATE_REASON] += 1
                return ENDPOINT_RATE_REASON
            glob.take()
            per.take()
            return None
