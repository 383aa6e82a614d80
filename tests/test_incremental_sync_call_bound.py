"""Incremental syncs stay within issue 15's Salesforce call bound, ceil(N/2000) + ceil(new/200)
+ 5 (N orders read, new customers created), with one query per watched object: the overlap
window's orders already applied are not read again, the deletions and every object's first
change page go in one Composite call (Salesforce counts it as one), and custom relationships
resolved by describe are remembered in the store instead of described again by every run.

Calls are counted by the sandbox org, per resource, as Salesforce counts them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import connector.salesforce as salesforce
from connector.config import Config
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

N = 450
ACME = "001000000000A01AAA"  # billed in the sandbox's small org


def bound(report: RunReport) -> int:
    return math.ceil(report.orders_read / 2000) + math.ceil(report.created / 200) + 5


def add_billed_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    sf = sandboxes.salesforce
    ids = []
    for i in range(n):
        acc = sf.create("Account", {"Name": f"Bound Customer {i:04d}", "BillingCountry": "Germany"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def spent_during(sandboxes: SandboxPair, fn: Callable[[], RunReport]) -> tuple[RunReport, dict[str, int]]:
    before = dict(sandboxes.salesforce.stats()["requests"])
    report = fn()
    after = sandboxes.salesforce.stats()["requests"]
    return report, {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def test_an_unchanged_and_a_one_percent_changed_sync_stay_within_the_call_bound(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Config]
) -> None:
    ids = add_billed_accounts(sandboxes, N)
    cfg = make_config(
        salesforce={"page_size": 200},
        billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]},
    )
    salesforce._DESCRIBED.clear()  # this process's describes; the store's are what must last
    backfill, _ = spent_during(sandboxes, lambda: run_sync("backfill", config=cfg))
    assert backfill.created == N + 3 and backfill.failed == 0
    assert backfill.salesforce_calls <= bound(backfill)
    salesforce._DESCRIBED.clear()  # as a new process would start

    # Right after the backfill: every order is in the overlap window, every account carries
    # the connector's own write-back. Nothing is read again, and nothing is described again.
    unchanged, spent = spent_during(sandboxes, lambda: run_sync("sync", config=cfg))

    assert unchanged.exit_code == 0 and unchanged.stripe_calls == 0
    assert unchanged.orders_read == 0
    assert spent == {"POST /services/data/v62.0/composite": 1}, spent
    assert unchanged.salesforce_calls == 1 <= bound(unchanged)

    # 1% of the accounts change: their orders are read by AccountId, one chunk.
    changed = ids[:: N // 5][:5]
    for acc in changed:
        sandboxes.salesforce.update("Account", acc, {"Phone": "+1 415 555 0100"})
    salesforce._DESCRIBED.clear()
    one_pct, spent = spent_during(sandboxes, lambda: run_sync("sync", config=cfg))

    assert one_pct.exit_code == 0 and one_pct.updated == 5 and one_pct.stripe_calls == 5
    assert one_pct.orders_read == 5
    assert spent == {
        "POST /services/data/v62.0/composite": 1,
        "GET /services/data/v62.0/query/": 1,
    }, spent
    assert one_pct.salesforce_calls == 2 <= bound(one_pct)


def test_an_order_saved_again_in_the_overlap_window_is_read_again(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    """Skipping the overlap's orders goes by (Id, SystemModstamp) as applied: a save of the
    order after it was read, even in the same window, makes it read again."""
    cfg = make_config()
    run_sync("backfill", config=cfg)
    run_sync("sync", config=cfg)
    sf = sandboxes.salesforce
    order = next(o for o in sf.records("Order") if o.get("Status") == "Activated")
    sf.update("Order", order["Id"], {"Description": "touched"})

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 0 and report.orders_read >= 1
    assert report.stripe_calls == 0  # nothing the mapping reads changed


def test_a_composite_subrequest_that_times_out_narrows_only_its_own_window(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    """The first change pages arrive together; one object's QUERY_TIMEOUT inside the Composite
    answer is that object's alone, and its window is halved as if it had been sent alone."""
    cfg = make_config()
    run_sync("backfill", config=cfg)
    run_sync("sync", config=cfg)
    sf = sandboxes.salesforce
    sf.advance_clock(3600)
    sf.update("Account", ACME, {"Name": "Renamed In A Slow Window"})
    sf.advance_clock(60)
    timeouts = sf.time_out_queries("Account", wider_than=1200)

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 0 and report.status == "succeeded", report.error
    assert timeouts.hits >= 1
    assert report.updated == 1
