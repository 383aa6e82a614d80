"""Merges after sync are refused, deletes never reach billing, admins decide explicitly.

Each test merges or deletes accounts in the Salesforce sandbox the way Salesforce does
(losers IsDeleted with MasterRecordId, children re-parented), runs the connector, and checks
what Stripe holds, what the store links, which conflict is open and what the run reports.
Merges refused and deletes ignored run for every billing system in
test_engine_on_every_target.py; the admin's choices after them are here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connector.admin import link_account, resolve_conflict
from connector.app import build_targets
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.errors import ConfigError
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore

FIELD = "Stripe_Customer_Id__c"
ACME, INITECH, MULTI, DRAFT_ONLY = "001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA", "001000000000D01AAA"


def customers_of(sandboxes: SandboxPair, account_id: str) -> list[dict[str, Any]]:
    return [c for c in sandboxes.stripe.customers() if c["metadata"].get("salesforce_account_id") == account_id]


@pytest.fixture
def store(db_url: str) -> Any:
    s = StateStore.open(db_url)
    yield s
    s.close()


def test_an_admin_links_the_held_winner_to_the_losers_customer(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore,
    make_config: Callable[..., Config], secrets: SecretSource,
) -> None:
    run_sync("backfill")
    acme_customer = store.links.get("default", ACME).customer_id
    sandboxes.salesforce.merge(DRAFT_ONLY, [ACME])
    run_sync("sync")
    [conflict] = store.conflicts.list("open")

    resolved = resolve_conflict(store, build_targets(make_config(), secrets), conflict.id, choice="link",
                                customer_id=acme_customer, by="ops@example.com")
    report = run_sync("sync")

    assert resolved.resolved_by == "ops@example.com" and resolved.resolution == f"link:{acme_customer}"
    assert report.created == 0 and report.refused == 0 and report.failed == 0
    assert store.links.get("default", DRAFT_ONLY).customer_id == acme_customer
    customer = sandboxes.stripe.get_customer(acme_customer)
    assert customer["name"] == "Draft Only Ltd"  # now synced from the surviving account
    assert customer["metadata"]["salesforce_account_id"] == DRAFT_ONLY
    assert sandboxes.salesforce.get("Account", DRAFT_ONLY)[FIELD] == acme_customer


def test_an_admin_chooses_a_new_customer_for_the_held_winner(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore
) -> None:
    run_sync("backfill")
    sandboxes.salesforce.merge(DRAFT_ONLY, [ACME])
    run_sync("sync")
    [conflict] = store.conflicts.list("open")
    customers_before = len(sandboxes.stripe.customers())

    resolve_conflict(store, [], conflict.id, choice="new", customer_id=None, by="ops")
    first = run_sync("sync")
    second = run_sync("sync")

    assert first.created == 1 and second.created == 0
    assert len(sandboxes.stripe.customers()) == customers_before + 1
    [new_customer] = customers_of(sandboxes, DRAFT_ONLY)
    assert store.links.get("default", DRAFT_ONLY).customer_id == new_customer["id"]
    assert store.links.get("default", ACME).status == "merged"  # the loser's link is kept
    with pytest.raises(ConfigError, match="already resolved"):
        resolve_conflict(store, [], conflict.id, choice="ignore", customer_id=None, by="ops")


def test_a_winner_whose_field_names_the_losers_customer_is_not_written(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore
) -> None:
    run_sync("backfill")
    loser_customer = store.links.get("default", ACME).customer_id
    winner_customer = store.links.get("default", INITECH).customer_id
    before = {c["id"]: c for c in sandboxes.stripe.customers()}

    # Salesforce's merge screen lets the user keep the loser's Stripe Id on the winner.
    sandboxes.salesforce.merge(INITECH, [ACME], keep_from={FIELD: ACME})
    sandboxes.salesforce.update("Account", INITECH, {"Name": "Initech Merged"})
    report = run_sync("sync")

    assert report.exit_code == 1
    kinds = {c.kind for c in store.conflicts.list("open")}
    assert kinds == {"merge_both_linked", "winner_field_names_other_customer"}
    assert sandboxes.stripe.get_customer(loser_customer) == before[loser_customer]
    assert sandboxes.stripe.get_customer(winner_customer) == before[winner_customer]
    assert sandboxes.salesforce.get("Account", INITECH)[FIELD] == loser_customer  # not overwritten


def test_merging_accounts_before_they_were_synced_is_not_a_conflict(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore
) -> None:
    sandboxes.salesforce.merge(INITECH, [ACME])  # before any sync: the documented way

    report = run_sync("backfill")

    assert report.refused == 0 and report.exit_code == 0
    assert store.conflicts.list("open") == []
    assert len(customers_of(sandboxes, INITECH)) == 1
    assert customers_of(sandboxes, ACME) == []


def test_a_customer_deleted_in_stripe_is_never_recreated_without_an_admin(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore
) -> None:
    run_sync("backfill")
    customer = store.links.get("default", ACME).customer_id
    sandboxes.stripe.delete_customer(customer)
    sandboxes.salesforce.update("Account", ACME, {"Phone": "+1 217 555 0199"})

    failed = run_sync("sync")
    held = run_sync("sync")

    assert failed.failed == 1 and failed.created == 0
    assert held.created == 0 and held.refused == 1
    assert store.links.get("default", ACME).customer_id == customer
    [conflict] = store.conflicts.list("open")
    assert conflict.kind == "customer_deleted_in_billing" and conflict.customer_id == customer

    resolve_conflict(store, [], conflict.id, choice="new", customer_id=None, by="ops")
    fixed = run_sync("sync")

    assert fixed.created == 1
    new_id = store.links.get("default", ACME).customer_id
    assert new_id != customer
    assert sandboxes.salesforce.get("Account", ACME)[FIELD] == new_id


def test_xref_link_refuses_a_customer_linked_to_another_account(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], store: StateStore,
    make_config: Callable[..., Config], secrets: SecretSource,
) -> None:
    run_sync("backfill")
    [target] = build_targets(make_config(), secrets)
    other = store.links.get("default", INITECH).customer_id

    with pytest.raises(ConfigError, match="is linked to account"):
        link_account(store, target, ACME, other, by="support")
    with pytest.raises(ConfigError, match="does not exist"):
        link_account(store, target, ACME, "cus_NoSuchCustomer1", by="support")

    assert store.links.get("default", ACME).customer_id != other
