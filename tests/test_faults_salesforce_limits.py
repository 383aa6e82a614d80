"""Salesforce's daily API limit: REQUEST_LIMIT_EXCEEDED (403) stops the run with exit 3 and no
cursor move; the budget guard (salesforce.api_budget_share of what `Sforce-Limit-Info` said was
left) stops a run cleanly before it spends more than its share, and nothing is lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import BILLED
from fault_readback import (
    SF_QUERY_MORE,
    add_billed_accounts,
    assert_one_customer_each,
    customers_by_account,
    read_store,
    sf_errors,
)

from connector.config import Config
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

PAGE = 200


@pytest.mark.parametrize("when", ["at_start", "mid_paging"])
def test_request_limit_exceeded_stops_the_run_with_exit_3_and_keeps_the_cursor(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Config],
    db_url: str,
    when: str,
) -> None:
    cfg = make_config(salesforce={"page_size": PAGE})
    run_sync("sync", config=cfg)
    before = read_store(db_url)
    new = add_billed_accounts(sandboxes.salesforce, 5, orders_each=50)  # two pages
    if when == "at_start":
        # The org itself has no calls left: the sandbox answers 403 REQUEST_LIMIT_EXCEEDED.
        sandboxes.salesforce.set_daily_limit(sandboxes.salesforce.api_calls_used)
    else:
        sandboxes.salesforce.inject_fault(
            status=403,
            body=sf_errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            method="GET",
            path=SF_QUERY_MORE,
            count=1,
        )
    writes = sandboxes.stripe.write_count

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 3 and report.status == "failed"
    assert "REQUEST_LIMIT_EXCEEDED" in (report.error or "")
    view = read_store(db_url)
    assert view.cursor == before.cursor
    done = set(customers_by_account(sandboxes)) - BILLED
    if when == "at_start":
        assert sandboxes.stripe.write_count == writes and not done
    else:
        assert done and new[-1] not in done  # the first page was applied, the second never read
    customers = assert_one_customer_each(sandboxes, BILLED | done)
    view.assert_links_match(customers)

    sandboxes.salesforce.reset_api_usage()  # a new day
    sandboxes.salesforce.set_daily_limit(15000)
    again = run_sync("sync", config=cfg)

    assert again.exit_code == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    read_store(db_url).assert_links_match(customers)


def test_the_budget_guard_stops_before_the_run_exceeds_its_share(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Config],
    db_url: str,
) -> None:
    cfg = make_config(salesforce={"page_size": PAGE, "api_budget_share": 0.1})
    run_sync("sync", config=cfg)
    before = read_store(db_url)
    new = add_billed_accounts(sandboxes.salesforce, 5, orders_each=50)  # two pages
    sf = sandboxes.salesforce
    used = sf.api_calls_used
    # 20 calls left today; after its first call the run may use 10% of the 19 left: one more.
    # (With today's engine the first call reads deleted/merged accounts and the one more reads
    # the first page of orders; the second page is never read.)
    sf.set_daily_limit(used + 20)
    share = int(0.1 * 19)

    report = run_sync("sync", config=cfg)

    assert report.exit_code == 3 and report.status == "failed"
    assert "budget" in (report.error or "").lower()
    assert sf.api_calls_used - used == 1 + share  # stopped before the call past its share
    view = read_store(db_url)
    assert view.cursor == before.cursor
    done = set(customers_by_account(sandboxes)) - BILLED
    assert new[-1] not in done  # the second page was never read
    customers = assert_one_customer_each(sandboxes, BILLED | done)
    view.assert_links_match(customers)

    sf.reset_api_usage()  # a new day, a whole allowance
    sf.set_daily_limit(15000)
    again = run_sync("sync", config=cfg)

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert before.cursor is not None and after.cursor is not None and after.cursor > before.cursor
    # Nothing lost: every link made in the stopped run was written back by the next one.
    assert not [a for a, ln in after.links.items() if ln.writeback_pending]
