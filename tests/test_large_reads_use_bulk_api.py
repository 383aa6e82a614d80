"""A full read larger than `salesforce.bulk_threshold` goes on through a Bulk API 2.0 query job
after its first REST page, streamed page by page into the same pipeline (issue 15): the same
customers, the same payloads (a re-check after it changes nothing), within the call bound."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

N = 450


def add_billed_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    sf = sandboxes.salesforce
    ids = []
    for i in range(n):
        acc = sf.create("Account", {"Name": f"Bulk Read {i:04d}", "BillingCountry": "Germany",
                                    "BillingStreet": "Hauptstr. 1\nHof 2", "Phone": "+49 30 1234567"})
        order = sf.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sf.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def spent(sandboxes: SandboxPair, before: dict[str, int]) -> dict[str, int]:
    after = sandboxes.salesforce.stats()["requests"]
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def test_a_large_backfill_reads_through_a_bulk_query_job_and_a_recheck_then_changes_nothing(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any]
) -> None:
    ids = add_billed_accounts(sandboxes, N)
    cfg = make_config(
        salesforce={"page_size": 200, "bulk_threshold": 300, "bulk_page_size": 200, "bulk_poll_seconds": 0},
        billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]},
    )
    before = dict(sandboxes.salesforce.stats()["requests"])
    soql_before = len(sandboxes.salesforce.soql_received())

    report = run_sync("backfill", config=cfg)

    billed = N + 3
    assert report.exit_code == 0 and report.created == billed and report.failed == 0
    assert report.stripe_calls == billed
    calls = spent(sandboxes, before)
    jobs = sum(v for k, v in calls.items() if k.startswith("POST") and k.rstrip("/").endswith("jobs/query"))
    assert jobs == 1
    bound = math.ceil(N / 2000) + math.ceil(billed / 200) + 5
    assert report.salesforce_calls <= bound, (report.salesforce_calls, bound, calls)
    bulk_soql = [q for q in sandboxes.salesforce.soql_received()[soql_before:] if "Id > '" in q]
    assert len(bulk_soql) == 1  # the job reads on after the first REST page's last Id
    assert all(sandboxes.salesforce.get("Account", a)["Stripe_Customer_Id__c"] for a in ids)

    # The rows the job returned were shaped as REST's: a re-check through it again finds every
    # payload unchanged (no Stripe call), and a plain sync after it too.
    recheck = run_sync("recheck", config=cfg)
    assert recheck.exit_code == 0 and recheck.stripe_calls == 0 and recheck.unchanged == billed
    again = run_sync("sync", config=cfg)
    assert again.exit_code == 0 and again.stripe_calls == 0


def test_a_backfill_stopped_inside_the_bulk_job_resumes_without_skipping_unordered_rows(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any],
    secrets: Any,
) -> None:
    """A query job's rows come in PK chunks in no promised order (the sandbox shuffles them):
    the resume point may not move past an Id some unread chunk still holds."""
    from connector.app import open_pipeline
    from connector.errors import LockLost

    ids = add_billed_accounts(sandboxes, N)
    cfg = make_config(
        salesforce={"page_size": 200, "bulk_threshold": 300, "bulk_page_size": 200, "bulk_poll_seconds": 0},
        billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_requests_per_second": 1000}]},
    )
    checks = {"n": 0}

    def lose_lock_inside_the_job() -> None:
        # Past the first REST page (200 orders) and one page of the job.
        checks["n"] += 1
        if checks["n"] > 330:
            raise LockLost("the runner lock's database session ended; another runner may hold it")

    with open_pipeline(cfg, secrets) as p:
        p.engine.before_write = lose_lock_inside_the_job
        first = p.engine.run("backfill")
    assert first.status == "interrupted"
    made_first = len(sandboxes.stripe.customers())
    assert 200 < made_first < N + 3

    second = run_sync("backfill", config=cfg)

    assert second.exit_code == 0 and second.failed == 0
    customers = sandboxes.stripe.customers()
    by_account = [c["metadata"]["salesforce_account_id"] for c in customers]
    assert len(by_account) == len(set(by_account)) == N + 3  # none skipped, none twice
    assert all(sandboxes.salesforce.get("Account", a)["Stripe_Customer_Id__c"] for a in ids)
