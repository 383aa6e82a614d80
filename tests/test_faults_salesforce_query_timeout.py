"""Salesforce answers an incremental query with QUERY_TIMEOUT (as a 400, and as a 500 when the
server gives up): the window is halved and the run goes on (issue 15: before, the run failed,
kept the cursor, and the next run retried a wider window, so syncing stalled for good). Nothing
is lost or duplicated, and the cursor still never passes a change not applied."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import BILLED
from fault_readback import SF_QUERY, assert_one_customer_each, read_store, sf_errors

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME = "001000000000A01AAA"


@pytest.mark.parametrize("status", [400, 500])
def test_a_query_timeout_narrows_the_window_and_the_run_still_applies_every_change(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str, status: int
) -> None:
    run_sync("sync")
    customers = assert_one_customer_each(sandboxes, BILLED)
    before = read_store(db_url)
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Timeout Inc"})
    fault = sandboxes.salesforce.inject_fault(
        status=status,
        method="GET",
        path=SF_QUERY,
        count=1,
        body=sf_errors("QUERY_TIMEOUT", "Your query request was running for too long."),
    )
    writes = sandboxes.stripe.write_count

    report = run_sync("sync")

    assert fault.hits == 1
    assert report.exit_code == 0 and report.status == "succeeded", report.error
    assert report.updated == 1 and sandboxes.stripe.write_count == writes + 1
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    assert sandboxes.stripe.get_customer(customers[ACME])["name"] == "Acme Timeout Inc"  # type: ignore[index]
    view = read_store(db_url)
    assert view.cursor > before.cursor  # type: ignore[operator]
    assert view.runs[0].status == "succeeded"

    again = run_sync("sync")

    assert again.exit_code == 0 and again.stripe_calls == 0
