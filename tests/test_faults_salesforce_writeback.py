"""Writing the customer id back to the Account fails: per record (UNABLE_TO_LOCK_ROW, a
validation rule, ...) in a mixed sObject Collections answer, or for the whole call. The
customer and its link stay, the link stays pending write-back, the outcome says so, and the
next run writes the id back without creating a second customer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import BILLED
from fault_readback import (
    FIELD,
    SF_COLLECTION,
    assert_one_customer_each,
    read_store,
    sf_errors,
)

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

INITECH = "001000000000A02AAA"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record or 1 records: 001000000000A02AAA",
        ),
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Accounts in Germany need a VAT number"),
    ],
)
def test_a_per_record_writeback_failure_keeps_the_link_pending_and_the_next_run_writes_it(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str, code: str, message: str
) -> None:
    sandboxes.salesforce.fail_record_updates(INITECH, code, message)

    first = run_sync("sync")

    assert first.created == 3 and first.exit_code == 1
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert view.links[INITECH].writeback_pending is True
    assert [a for a, ln in view.links.items() if ln.writeback_pending] == [INITECH]
    assert not sandboxes.salesforce.get("Account", INITECH)[FIELD]  # type: ignore[index]
    for other in BILLED - {INITECH}:
        assert sandboxes.salesforce.get("Account", other)[FIELD] == customers[other]  # type: ignore[index]
    outcome = view.outcome(first.run_id, INITECH)
    assert outcome.outcome == "failed" and code in (outcome.error_code or "")
    assert message in (outcome.error_message or "") and outcome.customer_id == customers[INITECH]

    second = run_sync("sync")

    assert second.exit_code == 0 and second.created == 0 and second.failed == 0
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    assert sandboxes.salesforce.get("Account", INITECH)[FIELD] == customers[INITECH]  # type: ignore[index]
    after = read_store(db_url)
    assert not [a for a, ln in after.links.items() if ln.writeback_pending]


def test_a_writeback_call_refused_as_a_whole_keeps_every_link_pending_and_says_so(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    fault = sandboxes.salesforce.inject_fault(
        status=400,
        method="PATCH",
        path=SF_COLLECTION,
        count=1,
        body=sf_errors("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),
    )

    first = run_sync("sync")

    assert fault.hits == 1 and first.created == 3
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert all(ln.writeback_pending for ln in view.links.values())
    # A user must see that three ids did not reach Salesforce: not a clean exit 0.
    assert first.exit_code != 0
    recorded = [
        o for o in view.outcomes[first.run_id] if "UNABLE_TO_LOCK_ROW" in (o.error_code or "")
    ]
    assert {o.account_id for o in recorded} == BILLED

    second = run_sync("sync")

    assert second.exit_code == 0 and second.created == 0
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    assert not [a for a, ln in read_store(db_url).links.items() if ln.writeback_pending]


@pytest.mark.parametrize("body", [[], {"unexpected": "shape"}], ids=["empty_list", "not_a_list"])
def test_a_writeback_answer_without_a_result_per_record_keeps_the_links_pending_and_says_so(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str, body: object
) -> None:
    # Salesforce answers one SaveResult per record; a proxy or an outage page can answer 200
    # with something else. No result is no confirmation.
    fault = sandboxes.salesforce.inject_fault(
        status=200, method="PATCH", path=SF_COLLECTION, count=1, body=body
    )

    first = run_sync("sync")

    assert fault.hits == 1 and first.created == 3
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert all(ln.writeback_pending for ln in view.links.values())
    assert first.exit_code != 0
    recorded = [
        o for o in view.outcomes[first.run_id] if (o.error_code or "").startswith("writeback")
    ]
    assert {o.account_id for o in recorded} == BILLED

    second = run_sync("sync")

    assert second.exit_code == 0 and second.created == 0
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    assert not [a for a, ln in read_store(db_url).links.items() if ln.writeback_pending]
