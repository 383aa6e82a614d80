"""Salesforce answers the orders query with QUERY_TIMEOUT (as a 400, and as a 500 when the
server gives up): the run fails with a non-zero exit, writes nothing, keeps the cursor, and the
next run does the work."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import BILLED
from fault_readback import SF_QUERY, assert_one_customer_each, read_store, sf_errors

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME = "001000000000A01AAA"


@pytest.mark.parametrize("status", [400, 500])
def test_a_query_timeout_fails_the_run_keeps_the_cursor_and_the_next_run_is_fine(
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
    assert report.exit_code != 0 and report.status == "failed"
    assert "QUERY_TIMEOUT" in (report.error or "")
    assert sandboxes.stripe.write_count == writes
    view = read_store(db_url)
    assert view.cursor == before.cursor
    assert view.runs[0].status == "failed" and "QUERY_TIMEOUT" in (view.runs[0].error or "")

    again = run_sync("sync")

    assert again.exit_code == 0 and again.updated == 1
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    assert sandboxes.stripe.get_customer(customers[ACME])["name"] == "Acme Timeout Inc"  # type: ignore[index]
    assert read_store(db_url).cursor > before.cursor  # type: ignore[operator]
