"""Writes at the rate cap: several requests in flight per billing account, never two for one
Salesforce account, results recorded in input order; a storm of 429s fails no record.

Concurrency is read from the Stripe sandbox's own counters (requests being served at once,
writes of one Salesforce account that overlapped), never from timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import BILLED
from fault_readback import assert_one_customer_each, read_store
from structlog.testing import capture_logs

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import rate_limit_body
from connector.sandbox.stripe_limits import RateLimits

N = 40


def add_billed_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    sf = sandboxes.salesforce
    ids = []
    for i in range(n):
        acc = sf.create("Account", {"Name": f"Parallel Co {i:03d}", "BillingCountry": "Germany"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def stripe_account(sandboxes: SandboxPair, **values: Any) -> dict[str, Any]:
    return {"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, **values}]}


def test_writes_go_out_concurrently_and_never_two_for_one_account(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any], db_url: str
) -> None:
    ids = add_billed_accounts(sandboxes, N)
    # Latency makes requests overlap whenever the connector sends more than one at a time.
    sandboxes.stripe.set_latency(0.05)
    cfg = make_config(billing=stripe_account(sandboxes, max_requests_per_second=200, max_in_flight=8))

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 0 and report.failed == 0 and report.created == N + 3
    stats = sandboxes.stripe.stats()
    assert 1 < stats["peak_in_flight"] <= 8
    assert stats["overlaps"] == []  # no Salesforce account written by two requests at once
    # The report says how many the connector had in flight: at least what Stripe served at once.
    pacing = report.as_json()["billing_accounts"]["default"]
    assert stats["peak_in_flight"] <= pacing["peak_in_flight"] <= 8
    assert (pacing["rate_limited"], pacing["slowdowns"]) == (0, 0)
    assert report.stripe_calls == N + 3  # still one call per created account
    customers = assert_one_customer_each(sandboxes, BILLED | set(ids))
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not view.intents and not view.retries

    # Updates go out concurrently too, one per changed account, none overlapping.
    for acc in ids:
        sandboxes.salesforce.update("Account", acc, {"Phone": "+49 30 1234567"})
    sandboxes.stripe.reset_flight()
    again = run_sync("sync", config=cfg)
    assert again.exit_code == 0 and again.updated == N and again.stripe_calls == N
    stats = sandboxes.stripe.stats()
    assert stats["peak_in_flight"] > 1 and stats["overlaps"] == []


def test_max_in_flight_1_sends_one_request_at_a_time(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    add_billed_accounts(sandboxes, 10)
    sandboxes.stripe.set_latency(0.02)
    cfg = make_config(billing=stripe_account(sandboxes, max_requests_per_second=200, max_in_flight=1))

    report = run_sync("sync", config=cfg)

    assert report.created == 13 and report.failed == 0
    assert sandboxes.stripe.stats()["peak_in_flight"] == 1
    assert report.billing_accounts["default"]["peak_in_flight"] == 1


def test_outcomes_are_recorded_in_input_order_whatever_order_answers_come_in(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    ids = add_billed_accounts(sandboxes, 12)
    sandboxes.stripe.set_latency(0.02)
    serial_cfg = make_config(billing=stripe_account(sandboxes, max_requests_per_second=500, max_in_flight=1))
    dry = run_sync("sync", config=serial_cfg, dry_run=True)
    cfg = make_config(billing=stripe_account(sandboxes, max_requests_per_second=500, max_in_flight=6))

    with_pool = run_sync("sync", config=cfg)

    assert with_pool.created == len(ids) + 3
    # The decisions read in the order the accounts were planned, as in a serial run.
    assert [d.account_id for d in with_pool.decisions] == [d.account_id for d in dry.decisions]


def test_a_storm_of_429s_slows_the_writers_down_and_fails_no_record(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any], db_url: str
) -> None:
    ids = add_billed_accounts(sandboxes, 20)
    sandboxes.stripe.set_latency(0.02)
    # Stripe's own two levels, with a per-endpoint budget far below what the connector is told.
    sandboxes.stripe.set_rate_limits(RateLimits(burst=2, global_rate=100, endpoint_rate=40))
    # And a storm on top: the next creates answer 429 with Retry-After 0.
    sandboxes.stripe.inject_fault(
        status=429, body=rate_limit_body(), headers={"Retry-After": "0", "Stripe-Rate-Limited-Reason": "global-rate"},
        method="POST", path=r"^/v1/customers$", count=8,
    )
    cfg = make_config(billing=stripe_account(sandboxes, max_requests_per_second=400,
                                             endpoint_limits={"customers.create": 400}, max_in_flight=8))

    with capture_logs() as logs:
        report = run_sync("sync", config=cfg)

    refused = [e for e in logs if e["event"] == "billing.rate_limited"]
    assert len(refused) >= 8
    # The writers slowed down below the pace they were told (by about a tenth per signal).
    assert min(e["pace"] for e in refused) < 400
    assert {e["reason"] for e in refused} >= {"global-rate"}
    # The report counts the run's 429s and the slow-downs they caused (several refused within
    # one round trip are one slow-down), per billing account.
    pacing = report.as_json()["billing_accounts"]["default"]
    assert pacing["rate_limited"] == len(refused)
    assert 1 <= pacing["slowdowns"] <= len(refused)
    assert 1 < pacing["peak_in_flight"] <= 8
    assert report.exit_code == 0 and report.failed == 0 and report.created == len(ids) + 3
    customers = assert_one_customer_each(sandboxes, BILLED | set(ids))
    read_store(db_url).assert_links_match(customers)
    assert sandboxes.stripe.stats()["overlaps"] == []


def test_the_write_back_runs_beside_the_writers(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any], db_url: str
) -> None:
    ids = add_billed_accounts(sandboxes, 210)  # two pages of orders
    cfg = make_config(
        salesforce={"page_size": 200, "writeback_batch_size": 50},
        billing=stripe_account(sandboxes, max_requests_per_second=1000),
    )
    stripe, sf = sandboxes.stripe, sandboxes.salesforce
    handle = sf._handle
    seen: dict[str, Any] = {}

    def hold_the_first_write_back(req: Any) -> Any:
        # The first write-back waits, on the Salesforce side, for Stripe to see the next page's
        # creates: only writers that go on beside the write-back ever let it through.
        if req.method == "PATCH" and "composite/sobjects" in req.path and "beside" not in seen:
            before = stripe.requests["POST /v1/customers"]
            seen["beside"] = False
            seen["beside"] = stripe.wait_until(
                lambda: stripe.requests["POST /v1/customers"] > before, timeout=60
            )
        return handle(req)

    sf._handle = hold_the_first_write_back  # type: ignore[method-assign]

    report = run_sync("sync", config=cfg)

    assert seen["beside"] is True
    assert report.exit_code == 0 and report.created == len(ids) + 3
    customers = assert_one_customer_each(sandboxes, BILLED | set(ids))
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not [a for a, ln in view.links.items() if ln.writeback_pending]
    assert all(sf.get("Account", a)["Stripe_Customer_Id__c"] == customers[a] for a in ids)  # type: ignore[index]
