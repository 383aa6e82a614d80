"""A dry run is the plan the run then carries out: for every record, the action `--dry-run`
prints is the action the following run takes. Over the fault and merge scenarios where the old
engine re-decided while applying: adopting a missing customer, merges, deletes, a customer linked
elsewhere, interrupted creates replayed, a field naming another customer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

FIELD = "Stripe_Customer_Id__c"
ACME, INITECH, MULTI, DRAFT_ONLY = "001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA", "001000000000D01AAA"


def customer_of(sandboxes: SandboxPair, account_id: str) -> str:
    return next(c["id"] for c in sandboxes.stripe.customers()
                if c["metadata"].get("salesforce_account_id") == account_id)


def adopt_missing_and_existing(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    sandboxes.stripe.load({"customers": [{"id": "cus_Existing000001", "name": "Old"}]})
    sandboxes.salesforce.update("Account", INITECH, {FIELD: "cus_DoesNotExist01"})
    sandboxes.salesforce.update("Account", MULTI, {FIELD: "cus_Existing000001"})


def adopt_deleted_customer(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    [cid] = sandboxes.stripe.load({"customers": [{"id": "cus_Deleted0000001", "name": "Gone"}]})
    sandboxes.stripe.delete_customer(cid)
    sandboxes.salesforce.update("Account", ACME, {FIELD: cid})


def merge_into_never_synced(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    sandboxes.salesforce.merge(DRAFT_ONLY, [ACME])


def merge_both_linked_and_field(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    acme = customer_of(sandboxes, ACME)
    sandboxes.salesforce.merge(INITECH, [ACME], keep_from={FIELD: ACME})
    _ = acme


def delete_and_rename(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    sandboxes.salesforce.delete("Account", INITECH)
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed"})


def reuse_of_a_customer_linked_elsewhere(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    acc = sandboxes.salesforce.create("Account", {"Name": "Copycat", FIELD: customer_of(sandboxes, ACME)})
    order = sandboxes.salesforce.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-05-01"})
    sandboxes.salesforce.update("Order", order, {"Status": "Activated"})


def field_names_another_customer(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    sandboxes.salesforce.update("Account", ACME, {FIELD: customer_of(sandboxes, INITECH)})
    sandboxes.salesforce.update("Account", MULTI, {FIELD: "cus_SomethingElse01"})


def interrupted_creates(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    # Creates applied by Stripe whose answers were lost, also on the client's retries.
    # Aimed at Acme by its account id: the creates go out concurrently.
    sandboxes.stripe.inject_fault(
        method="POST", path=r"^/v1/customers$", drop="after", count=3, body_contains=ACME
    )
    first = run_sync("backfill")
    assert first.failed == 1
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed Meanwhile"})
    sandboxes.salesforce.update("Account", MULTI, {"Name": "Multi Renamed Meanwhile"})


SCENARIOS = {
    "adopt a missing and an existing customer": adopt_missing_and_existing,
    "adopt a deleted customer": adopt_deleted_customer,
    "merge into an account never synced": merge_into_never_synced,
    "merge of two linked accounts": merge_both_linked_and_field,
    "delete one account, rename another": delete_and_rename,
    "reuse of a customer linked elsewhere": reuse_of_a_customer_linked_elsewhere,
    "write-back field names another customer": field_names_another_customer,
    "interrupted creates replayed": interrupted_creates,
}


def actions(report: RunReport) -> Counter[tuple[str, str, str]]:
    return Counter((d.billing_account, d.account_id, d.action) for d in report.decisions)


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_every_record_does_in_the_run_what_the_dry_run_planned(
    scenario: str, sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    SCENARIOS[scenario](sandboxes, run_sync)
    writes = sandboxes.stripe.write_count

    dry = run_sync("sync", dry_run=True)
    assert sandboxes.stripe.write_count == writes  # a dry run may read billing, never write
    real = run_sync("sync")

    assert dry.decisions, "the scenario planned nothing"
    assert actions(dry) == actions(real)
    counts = ("created", "updated", "unchanged", "refused")
    assert {k: getattr(dry, k) for k in counts} == {k: getattr(real, k) for k in counts}
    # Planned failures fail; nothing planned to succeed failed on the way.
    planned_failed = {(d.account_id, d.billing_account) for d in dry.decisions if d.action == "failed"}
    real_failed = {(d.account_id, d.billing_account) for d in real.decisions if d.outcome == "failed"}
    assert planned_failed == real_failed
    assert {p.account_id for p in dry.plan} == {d.account_id for d in dry.decisions}
    if scenario == "interrupted creates replayed":
        assert "replay" in {d.action for d in real.decisions}


def test_the_printed_plan_names_a_missing_adopted_customer_as_failed(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    adopt_missing_and_existing(sandboxes, run_sync)

    dry = run_sync("sync", dry_run=True)

    plan: dict[str, Any] = {p.account_id: p for p in dry.plan}
    assert plan[INITECH].action == "failed" and plan[INITECH].error_code == "adopt_customer_missing"
    assert "cus_DoesNotExist01" in plan[INITECH].detail()
    assert plan[MULTI].action == "adopt"
    assert dry.failed == 1 and dry.updated == 1 and dry.created == 1
