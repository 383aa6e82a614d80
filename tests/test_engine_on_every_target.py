"""The engine's promises, for every billing system behind the port, from one set of tests.

Each test runs once per `target` (conftest.py: the Stripe sandbox, then the Chargebee sandbox,
each with the shipped mapping for its system and a billing account of its kind), drives the real
SDKs through the real engine, and reads back what the billing sandbox holds through the port's
`fetch_customers`: sync twice makes zero writes, a changed field makes one update, a crash
between create and link makes no duplicate, merges are refused, deletes are ignored, and a dry
run is what the run then does. What only one system has stays in that system's own tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from billing_targets import TargetUnderTest, crash_after_create
from conftest import BILLED
from fault_readback import BA, StoreView, opened, read_store

from connector.app import open_pipeline
from connector.billing.base import RemoteCustomer
from connector.config import Config, SecretSource
from connector.engine import ORDERS_CURSOR, RunReport
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore

FIELD = "Stripe_Customer_Id__c"  # the first billing account's write-back field, any kind
ACME, INITECH, MULTI, DRAFT_ONLY = (
    "001000000000A01AAA",
    "001000000000A02AAA",
    "001000000000M01AAA",
    "001000000000D01AAA",
)

Billed = Callable[[], dict[str, list[RemoteCustomer]]]


def one_each(billed: Billed, accounts: set[str]) -> dict[str, str]:
    """Exactly `accounts` have a customer, each exactly one; account -> customer id."""
    by_account = billed()
    dupes = {k: [c.id for c in v] for k, v in by_account.items() if len(v) != 1}
    assert not dupes, f"duplicate customers: {dupes}"
    assert set(by_account) == accounts
    return {k: v[0].id for k, v in by_account.items()}


@pytest.fixture
def store(db_url: str) -> StateStore:
    s = StateStore.open(db_url)
    yield s  # type: ignore[misc]
    s.close()


# --- sync ------------------------------------------------------------------------------------


def test_backfill_creates_one_customer_per_billed_account_and_links_it(
    sandboxes: SandboxPair, target_run: Callable[..., RunReport], billed: Billed, db_url: str
) -> None:
    report = target_run("backfill")

    assert report.status == "succeeded" and report.exit_code == 0
    assert report.created == 3 and report.failed == 0
    customers = one_each(billed, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    for account_id, cid in customers.items():
        assert sandboxes.salesforce.get("Account", account_id)[FIELD] == cid
        assert view.links[account_id].writeback_pending is False
    with opened(db_url) as s:
        order_links = s.links.order_links(BA, ["801000000000O04AAA", "801000000000O05AAA"])
    assert {o.customer_id for o in order_links.values()} == {customers[MULTI]}


def test_a_second_sync_makes_zero_writes(
    target: TargetUnderTest, target_run: Callable[..., RunReport]
) -> None:
    target_run("sync")
    writes, requests = target.writes, target.requests

    again = target_run("sync")

    assert again.exit_code == 0
    assert again.created == again.updated == 0 and again.billing_calls == 0
    assert target.writes == writes and target.requests == requests


def test_a_changed_account_field_makes_exactly_one_update(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    billed: Billed,
) -> None:
    target_run("backfill")
    before = {c.id: c.payload for v in billed().values() for c in v}
    writes = target.writes

    sandboxes.salesforce.update("Account", INITECH, {"Phone": "+49 30 9876543"})
    report = target_run("sync")

    assert report.updated == 1 and report.created == 0 and report.billing_calls == 1
    assert target.writes == writes + 1
    after = {c.id: c for v in billed().values() for c in v}
    changed = [cid for cid in after if after[cid].payload != before[cid]]
    assert len(changed) == 1
    assert after[changed[0]].payload["phone"] == "+49309876543"
    assert after[changed[0]].tags["salesforce_account_id"] == INITECH


def test_a_renamed_account_reaches_the_customer(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    billed: Billed,
) -> None:
    target_run("backfill")
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Corporation"})

    report = target_run("sync")

    assert report.updated == 1
    [acme] = billed()[ACME]
    assert acme.payload[target.name_field] == "Acme Corporation"


def test_a_dry_run_changes_nothing_anywhere(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    db_url: str,
) -> None:
    target_run("backfill")
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed"})
    new_acc = sandboxes.salesforce.create("Account", {"Name": "Brand New Co"})
    order = sandboxes.salesforce.create(
        "Order", {"AccountId": new_acc, "Status": "Draft", "EffectiveDate": "2026-05-01"}
    )
    sandboxes.salesforce.update("Order", order, {"Status": "Activated"})
    with opened(db_url) as s:
        cursor_before = s.cursors.get(ORDERS_CURSOR)
        runs_before = len(s.runs.recent(100))
    writes, customers = target.writes, len(target.server.customers())

    report = target_run("sync", dry_run=True)

    plan = {p.account_id: p for p in report.plan}
    assert plan[new_acc].action == "create"
    assert plan[ACME].action == "update" and target.name_field in plan[ACME].changed_fields
    assert report.billing_calls == 0 and target.writes == writes
    assert len(target.server.customers()) == customers
    assert not sandboxes.salesforce.get("Account", new_acc).get(FIELD)
    with opened(db_url) as s:
        assert s.cursors.get(ORDERS_CURSOR) == cursor_before
        assert len(s.runs.recent(100)) == runs_before
        assert s.links.get(BA, new_acc) is None


def test_a_dry_run_names_only_the_fields_whose_values_changed(
    sandboxes: SandboxPair, target: TargetUnderTest, target_run: Callable[..., RunReport]
) -> None:
    # An update sends an address whole, so the target never merges half an object; the plan
    # still names only the leaves whose values changed (a new name once listed every
    # billing_address.* field on Chargebee, where the address carries the company too).
    target_run("backfill")
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed", "BillingCity": "Ulm"})

    report = target_run("sync", dry_run=True)

    [acme] = [p for p in report.plan if p.account_id == ACME]
    assert acme.action == "update"
    expected = {*target.name_paths, f"{target.address_field}.city"}
    assert acme.changed_fields == tuple(sorted(expected))
    assert set(acme.send or {}) == {path.split(".")[0] for path in expected}


# --- a crash between create and link -----------------------------------------------------------


@pytest.fixture
def crash(
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    target_config: Callable[..., Config],
    target_secrets: SecretSource,
    db_url: str,
) -> Callable[..., str | None]:
    """`crash(**kw)`: INITECH's create applied and its link lost (`crash_after_create` on the
    target under test); returns the customer made, None when the create was never sent."""
    port = target.port(target_config(), target_secrets)

    def crash_initech(**kw: Any) -> str | None:
        return crash_after_create(port, target_run, db_url, INITECH, **kw)[1]

    return crash_initech


def finished_without_duplicates(billed: Billed, db_url: str, made: str | None) -> StoreView:
    """One customer per billed account, INITECH's the one `made` (when it was), every link saved;
    the store as it is now, for what a test checks beyond that."""
    customers = one_each(billed, BILLED)
    if made is not None:
        assert customers[INITECH] == made
    view = read_store(db_url)
    view.assert_links_match(customers)
    return view


def test_an_interrupted_create_is_finished_with_its_key_not_duplicated(
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    crash: Callable[..., str | None],
    billed: Billed,
    db_url: str,
) -> None:
    made = crash()
    creates = target.server.operations["create"]

    report = target_run("sync")

    assert report.exit_code == 0 and report.failed == 0 and report.created == 3
    assert target.server.stats()["idempotent_replays"] == 1
    assert target.server.operations["create"] == creates + 2  # only the two other accounts
    view = finished_without_duplicates(billed, db_url, made)
    assert not view.intents and not view.retries and view.cursor is not None


def test_an_interrupted_create_replayed_after_the_account_changed_ends_with_the_new_values(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    crash: Callable[..., str | None],
    billed: Billed,
    db_url: str,
) -> None:
    made = crash()
    sandboxes.salesforce.update("Account", INITECH, {"Name": "Initech AG"})

    first = target_run("sync")
    second = target_run("sync")

    assert first.failed == 0 and second.failed == 0
    finished_without_duplicates(billed, db_url, made)
    [initech] = billed()[INITECH]
    assert initech.payload[target.name_field] == "Initech AG"


class Killed(BaseException):
    """The process dies here (nothing after it runs: not even the engine's own clean-up)."""


def test_a_run_killed_after_its_creates_and_before_their_links_is_finished_without_duplicates(
    target: TargetUnderTest,
    target_config: Callable[..., Config],
    target_secrets: SecretSource,
    target_run: Callable[..., RunReport],
    billed: Billed,
    db_url: str,
) -> None:
    def die_once_all_creates_are_sent() -> None:
        if target.server.operations["create"] >= len(BILLED):
            raise Killed

    with open_pipeline(target_config(), target_secrets) as p:
        p.engine.before_write = die_once_all_creates_are_sent
        with pytest.raises(Killed):
            p.engine.run("backfill")
    view = read_store(db_url)
    assert not view.links and set(view.intents) == BILLED  # billing has them, the store not
    assert len(target.server.customers()) == len(BILLED)

    report = target_run("sync")

    assert report.exit_code == 0 and report.failed == 0
    assert target.server.stats()["idempotent_replays"] == len(BILLED)
    assert not finished_without_duplicates(billed, db_url, None).intents
    again = target_run("sync")
    assert again.billing_calls == 0


@pytest.mark.parametrize("reached_billing", [True, False], ids=["reached", "never-sent"])
def test_an_interrupted_create_older_than_the_key_window_makes_no_second_customer(
    reached_billing: bool,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    target_config: Callable[..., Config],
    target_secrets: SecretSource,
    crash: Callable[..., str | None],
    billed: Billed,
    db_url: str,
) -> None:
    # The billing system has forgotten the key: replaying it could create a second customer.
    # Stripe finds the lost create's customer by its tags; Chargebee asks for the same id.
    window = target.port(target_config(), target_secrets).rules.idempotency_window
    made = crash(intent_age=window + timedelta(hours=1), send=reached_billing)
    target.server.expire_idempotency_keys()

    report = target_run("sync")

    assert report.exit_code == 0 and report.failed == 0
    view = finished_without_duplicates(billed, db_url, made)
    assert not view.intents and not view.retries


# --- merges and deletes ----------------------------------------------------------------------


def test_a_merge_where_only_the_loser_was_linked_holds_the_winner(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    billed: Billed,
    store: StateStore,
) -> None:
    target_run("backfill")
    acme_customer = store.links.get(BA, ACME).customer_id  # type: ignore[union-attr]
    customers_before = len(target.server.customers())
    writes = target.writes

    sandboxes.salesforce.merge(DRAFT_ONLY, [ACME])  # the never-synced account survives
    report = target_run("sync")

    assert report.refused >= 1 and report.exit_code == 1
    assert len(target.server.customers()) == customers_before
    assert target.writes == writes
    loser = store.links.get(BA, ACME)
    assert loser is not None and loser.status == "merged" and loser.customer_id == acme_customer
    assert store.links.get(BA, DRAFT_ONLY) is None
    [conflict] = store.conflicts.list("open")
    assert conflict.kind == "merge_loser_linked"
    assert (conflict.account_id, conflict.other_account_id) == (DRAFT_ONLY, ACME)

    again = target_run("sync")
    assert again.created == 0 and len(target.server.customers()) == customers_before


def test_a_merge_of_two_linked_accounts_keeps_both_and_the_winner_syncs_on(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    billed: Billed,
    store: StateStore,
) -> None:
    target_run("backfill")
    loser_customer = store.links.get(BA, ACME).customer_id  # type: ignore[union-attr]
    winner_customer = store.links.get(BA, INITECH).customer_id  # type: ignore[union-attr]
    loser_before = target.server.get_customer(loser_customer)

    sandboxes.salesforce.merge(INITECH, [ACME])
    sandboxes.salesforce.update("Account", INITECH, {"Phone": "+49 30 5550000"})
    report = target_run("sync")

    assert report.refused == 1
    [conflict] = store.conflicts.list("open")
    assert conflict.kind == "merge_both_linked" and conflict.account_id == ACME
    assert store.links.get(BA, ACME).status == "merged"  # type: ignore[union-attr]
    assert store.links.get(BA, INITECH).customer_id == winner_customer  # type: ignore[union-attr]
    [winner] = billed()[INITECH]
    assert winner.id == winner_customer and winner.payload["phone"] == "+49305550000"
    assert target.server.get_customer(loser_customer) == loser_before  # never written again
    assert len(target.server.customers()) == len(BILLED)


def test_a_deleted_account_leaves_billing_untouched_and_is_restored_on_the_same_customer(
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    billed: Billed,
    store: StateStore,
) -> None:
    target_run("backfill")
    customer = store.links.get(BA, INITECH).customer_id  # type: ignore[union-attr]
    before = target.server.get_customer(customer)
    writes = target.writes

    sandboxes.salesforce.delete("Account", INITECH)
    deleted_run = target_run("sync")

    assert deleted_run.exit_code == 0
    link = store.links.get(BA, INITECH)
    assert link is not None and link.status == "deleted" and link.customer_id == customer
    assert target.server.get_customer(customer) == before and target.writes == writes

    sandboxes.salesforce.undelete("Account", INITECH)
    sandboxes.salesforce.update("Account", INITECH, {"Phone": "+49 30 1112223"})
    restored = target_run("sync")

    assert restored.created == 0 and restored.updated == 1
    assert store.links.get(BA, INITECH).status == "active"  # type: ignore[union-attr]
    [initech] = billed()[INITECH]
    assert initech.id == customer and initech.payload["phone"] == "+49301112223"


# --- a dry run is the run --------------------------------------------------------------------


def merge_into_never_synced(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    run("backfill")
    sandboxes.salesforce.merge(DRAFT_ONLY, [ACME])


def merge_both_linked_and_field(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    run("backfill")
    sandboxes.salesforce.merge(INITECH, [ACME], keep_from={FIELD: ACME})


def delete_and_rename(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    run("backfill")
    sandboxes.salesforce.delete("Account", INITECH)
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed"})


def field_names_another_customer(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    run("backfill")
    initech_customer = sandboxes.salesforce.get("Account", INITECH)[FIELD]
    sandboxes.salesforce.update("Account", ACME, {FIELD: initech_customer})
    sandboxes.salesforce.update("Account", MULTI, {FIELD: "someone-elses-id"})


def reuse_of_a_customer_linked_elsewhere(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    run("backfill")
    acme_customer = sandboxes.salesforce.get("Account", ACME)[FIELD]
    acc = sandboxes.salesforce.create("Account", {"Name": "Copycat", FIELD: acme_customer})
    order = sandboxes.salesforce.create(
        "Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-05-01"}
    )
    sandboxes.salesforce.update("Order", order, {"Status": "Activated"})


def interrupted_creates(
    sandboxes: SandboxPair, target: TargetUnderTest, run: Callable[..., RunReport]
) -> None:
    # One account's create is applied but its answer lost, on every send of it (the SDK's and
    # the target's own retries, however many): the record fails with the customer made.
    target.server.inject_fault(
        method="POST", path=target.create_path, drop="after", count=1000, body_contains=INITECH
    )
    first = run("backfill")
    target.server.clear_faults()
    assert first.failed == 1
    sandboxes.salesforce.update("Account", ACME, {"Name": "Acme Renamed Meanwhile"})
    sandboxes.salesforce.update("Account", INITECH, {"Name": "Initech Renamed Meanwhile"})


SCENARIOS = {
    "merge into an account never synced": merge_into_never_synced,
    "merge of two linked accounts": merge_both_linked_and_field,
    "delete one account, rename another": delete_and_rename,
    "write-back field names another customer": field_names_another_customer,
    "reuse of a customer linked elsewhere": reuse_of_a_customer_linked_elsewhere,
    "interrupted creates replayed": interrupted_creates,
}


def actions(report: RunReport) -> Counter[tuple[str, str, str]]:
    return Counter((d.billing_account, d.account_id, d.action) for d in report.decisions)


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_every_record_does_in_the_run_what_the_dry_run_planned(
    scenario: str,
    sandboxes: SandboxPair,
    target: TargetUnderTest,
    target_run: Callable[..., RunReport],
    db_url: str,
) -> None:
    SCENARIOS[scenario](sandboxes, target, target_run)
    writes = target.writes
    with opened(db_url) as s:
        cursor = s.cursors.get(ORDERS_CURSOR)

    dry = target_run("sync", dry_run=True)
    assert target.writes == writes  # a dry run may read billing, never write
    with opened(db_url) as s:
        assert s.cursors.get(ORDERS_CURSOR) == cursor
    real = target_run("sync")

    assert dry.decisions, "the scenario planned nothing"
    assert actions(dry) == actions(real)
    counts = ("created", "updated", "unchanged", "refused")
    assert {k: getattr(dry, k) for k in counts} == {k: getattr(real, k) for k in counts}
    planned_failed = {d.account_id for d in dry.decisions if d.action == "failed"}
    real_failed = {d.account_id for d in real.decisions if d.outcome == "failed"}
    assert planned_failed == real_failed
    if scenario == "interrupted creates replayed":
        assert "replay" in {d.action for d in real.decisions}
