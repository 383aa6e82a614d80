"""A linked customer deleted in Stripe, then its account changes: Stripe answers
`resource_missing`, the record fails as `customer_missing` naming the customer, no new customer
is created on the connector's own, and the link stays as it was."""

from __future__ import annotations

from collections.abc import Callable

from conftest import BILLED
from fault_readback import assert_one_customer_each, customers_by_account, read_store

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

INITECH = "001000000000A02AAA"


def test_an_update_to_a_customer_deleted_in_stripe_fails_and_creates_nothing(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    run_sync("sync")
    customers = assert_one_customer_each(sandboxes, BILLED)
    gone = customers[INITECH]
    sandboxes.stripe.delete_customer(gone)
    sandboxes.salesforce.update("Account", INITECH, {"Phone": "+49 30 1234567"})
    creates_before = sandboxes.stripe.operations["create"]

    report = run_sync("sync")

    assert report.exit_code == 1 and report.failed == 1 and report.created == 0
    assert sandboxes.stripe.operations["create"] == creates_before
    assert INITECH not in customers_by_account(sandboxes)
    assert_one_customer_each(sandboxes, BILLED - {INITECH})
    view = read_store(db_url)
    failed = view.outcome(report.run_id, INITECH)
    assert failed.outcome == "failed" and failed.error_code == "customer_missing"
    assert gone in (failed.error_message or "")
    link = view.links[INITECH]
    assert link.customer_id == gone
    view.assert_links_match({k: v for k, v in customers.items() if k != INITECH})

    # Running again does not quietly create a replacement either.
    again = run_sync("sync", retry_all=True)

    assert again.created == 0 and again.exit_code != 0
    assert INITECH not in customers_by_account(sandboxes)
    assert read_store(db_url).links[INITECH].customer_id == gone
