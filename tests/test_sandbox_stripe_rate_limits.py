"""Stripe's rate limits in the sandbox: a burst, a global cap per account and a budget per endpoint.

No test here measures time: the sandbox reads a clock the test holds, requests are sent
without waiting, and the test moves the clock by hand and counts the 429s.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from connector.billing import stripe_schema
from connector.sandbox.stripe import StripeSandbox
from connector.sandbox.stripe_limits import RateLimits

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stripe-openapi" / "customers.openapi.json"
VENDORED = REPO / "connector" / "billing" / "specs" / "stripe_customers.openapi.json"

LIVE, TEST, RAISED = "acct_1LiveAccount000", "acct_1TestAccount000", "acct_1RaisedLimits00"
A, B = "acct_1OrgMemberA0000", "acct_1OrgMemberB0000"
LIVE_KEY, TEST_KEY, RAISED_KEY = "sk_live_limits_0001", "sk_test_limits_0002", "sk_live_raised_0003"
A_KEY, ORG_KEY = "sk_test_member_a_0004", "sk_org_test_limits_0005"

DATA: dict[str, Any] = {
    "accounts": [
        {"id": LIVE, "keys": [LIVE_KEY], "livemode": True},
        {"id": TEST, "keys": [TEST_KEY]},
        # Stripe raised this account's endpoint budgets (issue 15's third set-up).
        {"id": RAISED, "keys": [RAISED_KEY], "livemode": True, "rate_limits": {"endpoint": 100}},
        {"id": A, "keys": [A_KEY]},
        {"id": B},
    ],
    "organizations": [{"id": "org_1Limits", "keys": [ORG_KEY], "accounts": [A, B]}],
}


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def sandbox(clock: HandClock) -> Iterator[StripeSandbox]:
    with StripeSandbox(data=DATA, rate_limits=RateLimits(), clock=clock) as sb:
        yield sb


def client(sandbox: StripeSandbox, key: str, **options: Any) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": sandbox.url}, max_network_retries=0, **options)


def attempt(call: Any) -> str:
    """'ok', or the Stripe-Rate-Limited-Reason of the 429."""
    try:
        call()
    except stripe.RateLimitError as exc:
        assert exc.http_status == 429
        return str((exc.headers or {}).get("Stripe-Rate-Limited-Reason"))
    return "ok"


def test_a_burst_of_five_passes_at_once_and_the_sixth_is_refused(sandbox: StripeSandbox) -> None:
    stripe_client = client(sandbox, TEST_KEY)
    outcomes = [attempt(lambda: stripe_client.v1.customers.list()) for _ in range(8)]
    assert outcomes == ["ok"] * 5 + ["global-rate"] * 3


def test_429_is_stripes_rate_limit_error_and_changes_nothing(sandbox: StripeSandbox, clock: HandClock) -> None:
    stripe_client = client(sandbox, TEST_KEY)
    for _ in range(5):
        stripe_client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as err:
        stripe_client.v1.customers.create(params={"name": "Refused"}, options={"idempotency_key": "ik-429"})
    body = err.value.json_body
    assert body is not None and body["error"]["code"] == "rate_limit" and body["error"]["type"] == "invalid_request_error"
    document = json.loads((SHARED if SHARED.exists() else VENDORED).read_text(encoding="utf-8"))
    assert stripe_schema.response_problems("/v1/customers", "post", 429, body, document) == []
    assert (err.value.headers or {})["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert sandbox.customers(account=TEST) == []
    clock.now += 1.0
    made = stripe_client.v1.customers.create(params={"name": "Refused"}, options={"idempotency_key": "ik-429"})
    assert made.last_response is not None and "Idempotent-Replayed" not in made.last_response.headers
    assert [c["id"] for c in sandbox.customers(account=TEST)] == [made.id]


def _alternate(sandbox: StripeSandbox, clock: HandClock, key: str, *, seconds: float, step: float) -> Counter[tuple[str, str]]:
    """Creates and updates, one every `step` seconds of hand-moved time; outcome counts per kind."""
    stripe_client = client(sandbox, key)
    sandbox.set_rate_limits(None)
    target = stripe_client.v1.customers.create(params={"name": "Target"}).id
    sandbox.set_rate_limits(RateLimits())
    seen: Counter[tuple[str, str]] = Counter()
    for i in range(round(seconds / step)):
        clock.now += step
        if i % 2 == 0:
            seen["create", attempt(lambda i=i: stripe_client.v1.customers.create(params={"name": f"C{i}"}))] += 1
        else:
            seen["update", attempt(lambda i=i: stripe_client.v1.customers.update(target, params={"name": f"U{i}"}))] += 1
    return seen


def test_live_mode_creates_and_updates_are_two_endpoints_of_25_a_second(sandbox: StripeSandbox, clock: HandClock) -> None:
    # 100 creates and 100 updates asked for over 2 s: each endpoint lets 5 + 25 * 2 through,
    # the global cap of 100 a second never binds.
    seen = _alternate(sandbox, clock, LIVE_KEY, seconds=2.0, step=0.01)
    for kind in ("create", "update"):
        assert 54 <= seen[kind, "ok"] <= 56, seen
        assert seen[kind, "endpoint-rate"] == 100 - seen[kind, "ok"]
    assert seen["create", "global-rate"] == seen["update", "global-rate"] == 0


def test_test_mode_global_cap_of_25_binds_before_the_endpoints(sandbox: StripeSandbox, clock: HandClock) -> None:
    seen = _alternate(sandbox, clock, TEST_KEY, seconds=2.0, step=0.01)
    passed = seen["create", "ok"] + seen["update", "ok"]
    assert 54 <= passed <= 56, seen
    assert seen["create", "endpoint-rate"] == seen["update", "endpoint-rate"] == 0


def test_raised_endpoint_budgets_leave_the_global_cap(sandbox: StripeSandbox, clock: HandClock) -> None:
    seen = _alternate(sandbox, clock, RAISED_KEY, seconds=2.0, step=0.005)
    # 400 requests over 2 s; endpoints raised to 100 a second each, so the global 100 binds.
    passed = seen["create", "ok"] + seen["update", "ok"]
    assert 204 <= passed <= 206, seen
    assert seen["create", "global-rate"] + seen["update", "global-rate"] == 400 - passed


def test_search_has_its_own_budget_of_20(sandbox: StripeSandbox, clock: HandClock) -> None:
    stripe_client = client(sandbox, LIVE_KEY)
    outcomes: Counter[str] = Counter()
    for _ in range(100):  # 100 searches over 1 s
        clock.now += 0.01
        outcomes[attempt(lambda: stripe_client.v1.customers.search(params={"query": "name:'x'"}))] += 1
    assert 24 <= outcomes["ok"] <= 26 and outcomes["endpoint-rate"] == 100 - outcomes["ok"], outcomes


def test_accounts_reached_by_one_organization_key_share_its_limit(sandbox: StripeSandbox) -> None:
    to_a = client(sandbox, ORG_KEY, stripe_context=A)
    to_b = client(sandbox, ORG_KEY, stripe_context=B)
    outcomes = [attempt(lambda c=c: c.v1.customers.list()) for c in (to_a, to_b) * 4]
    assert outcomes == ["ok"] * 5 + ["global-rate"] * 3
    # Account A's own key is another credential with its own budget.
    assert attempt(lambda: client(sandbox, A_KEY).v1.customers.list()) == "ok"


def test_each_account_key_has_its_own_limit(sandbox: StripeSandbox) -> None:
    live, test = client(sandbox, LIVE_KEY), client(sandbox, TEST_KEY)
    assert [attempt(lambda: live.v1.customers.list()) for _ in range(6)][-1] == "global-rate"
    assert [attempt(lambda: test.v1.customers.list()) for _ in range(5)] == ["ok"] * 5


def test_limits_through_the_control_api(sandbox: StripeSandbox) -> None:
    url = f"{sandbox.url}/_sandbox/rate_limits"
    assert requests.post(url, json={"burst": 2}, timeout=5).json() == {"ok": True, "enabled": True}
    stripe_client = client(sandbox, TEST_KEY)
    assert [attempt(lambda: stripe_client.v1.customers.list()) for _ in range(3)] == ["ok", "ok", "global-rate"]
    bad = requests.post(url, json={"burst": 0}, timeout=5)
    assert bad.status_code == 400 and "rate_limits.burst" in bad.json()["error"]
    assert requests.post(url, json={"enabled": False}, timeout=5).json()["enabled"] is False
    assert [attempt(lambda: stripe_client.v1.customers.list()) for _ in range(10)] == ["ok"] * 10
    assert sandbox.stats()["rate_limited"] == 1


def test_limits_are_off_unless_asked_for() -> None:
    with StripeSandbox(data=DATA, clock=HandClock()) as sb:
        stripe_client = client(sb, TEST_KEY)
        assert [attempt(lambda: stripe_client.v1.customers.list()) for _ in range(30)] == ["ok"] * 30
