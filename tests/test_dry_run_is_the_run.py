"""A dry run is the plan the run then carries out: for every record, the action `--dry-run`
prints is the action the following run takes. Here the scenarios that adopt Stripe customers by
id; merges, deletes, a customer linked elsewhere, interrupted creates replayed and a field naming
another customer run for every billing system in test_engine_on_every_target.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

FIELD = "Stripe_Customer_Id__c"
ACME, INITECH, MULTI, DRAFT_ONLY = "001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA", "001000000000D01AAA"


def adopt_missing_and_existing(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    sandboxes.stripe.load({"customers": [{"id": "cus_Existing000001", "name": "Old"}]})
    sandboxes.salesforce.update("Account", INITECH, {FIELD: "cus_DoesNotExist01"})
    sandboxes.salesforce.update("Account", MULTI, {FIELD: "cus_Existing000001"})


def adopt_deleted_customer(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    [cid] = sandboxes.stripe.load({"customers": [{"id": "cus_Deleted0000001", "name": "Gone"}]})
    sandboxes.stripe.delete_customer(cid)
    sandboxes.salesforce.update("Account", ACME, {FIELD: cid})


# Scenarios that need Stripe's own customer ids; the target-neutral ones run for every billing
# system in test_engine_on_every_target.py.
SCENARIOS = {
    "adopt a missing and an existing customer": adopt_missing_and_existing,
    "adopt a deleted customer": adopt_deleted_customer,
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
