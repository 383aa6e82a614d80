"""The sync engine end to end: simple-salesforce and stripe.StripeClient against the sandboxes,
the real state store on SQLite and PostgreSQL. Each test asserts on what the servers hold.
What the Stripe mapping writes and Stripe-only adoption are here; the engine's promises for every
billing system (sync twice, one update, dry run) are in test_engine_on_every_target.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import BILLED

from connector.engine import ORDERS_CURSOR, RunReport
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore

FIELD = "Stripe_Customer_Id__c"


def customers_by_account(sandboxes: SandboxPair) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in sandboxes.stripe.customers():
        out.setdefault(c["metadata"].get("salesforce_account_id", "?"), []).append(c)
    return out


def stripe_writes(sandboxes: SandboxPair) -> int:
    return int(sandboxes.stripe.write_count)


def test_customer_payload_follows_the_default_mapping(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    acme = customers_by_account(sandboxes)["001000000000A01AAA"][0]

    assert acme["name"] == "Acme Corp"  # trimmed
    assert acme["email"] == "jane.doe@acme.example"  # bill-to contact, trimmed and lower-cased
    assert acme["phone"] == "+12175550100"
    assert acme["address"]["line1"] == "1 Main St"
    assert acme["address"]["line2"] == "Suite 100"
    assert acme["address"]["country"] == "US"
    assert acme["metadata"]["salesforce_account_id"] == "001000000000A01AAA"
    assert acme["metadata"]["salesforce_org_id"].startswith("00D000000000001")
    initech = customers_by_account(sandboxes)["001000000000A02AAA"][0]
    assert initech["shipping"]["name"] == "Initech GmbH"
    assert initech["shipping"]["address"]["city"] == "Potsdam"
    # With several activated orders, the latest one's bill-to contact decides.
    multi = customers_by_account(sandboxes)["001000000000M01AAA"][0]
    assert multi["email"] == "new@multi.example"


def test_a_changed_bill_to_contact_updates_the_customer_without_a_new_order(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    run_sync("backfill")
    sandboxes.salesforce.update("Contact", "003000000000C01AAA", {"Email": "billing@acme.example"})

    report = run_sync("sync")

    assert report.updated == 1
    assert customers_by_account(sandboxes)["001000000000A01AAA"][0]["email"] == "billing@acme.example"


def test_fields_the_mapping_does_not_name_are_never_touched(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    run_sync("backfill")
    cid = customers_by_account(sandboxes)["001000000000A01AAA"][0]["id"]
    # Someone edits Stripe directly: a field and a metadata key the mapping does not name.
    sandboxes.stripe.edit_customer(cid, {"invoice_prefix": "ACME1", "metadata": {"crm_note": "vip"}})

    sandboxes.salesforce.update("Account", "001000000000A01AAA", {"Name": "Acme Corporation"})
    run_sync("sync")

    c = sandboxes.stripe.get_customer(cid)
    assert c is not None
    assert c["name"] == "Acme Corporation"
    assert c["invoice_prefix"] == "ACME1"
    assert c["metadata"]["crm_note"] == "vip"


def test_an_account_whose_stripe_id_field_is_set_adopts_that_customer(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    existing = sandboxes.stripe.load({"customers": [{"id": "cus_Existing000001", "name": "Old name"}]})
    assert existing == ["cus_Existing000001"]
    sandboxes.salesforce.update("Account", "001000000000A02AAA", {FIELD: "cus_Existing000001"})

    report = run_sync("backfill")

    assert report.failed == 0
    by_account = customers_by_account(sandboxes)
    assert [c["id"] for c in by_account["001000000000A02AAA"]] == ["cus_Existing000001"]
    assert by_account["001000000000A02AAA"][0]["name"] == "Initech GmbH"
    assert len(sandboxes.stripe.customers()) == 3  # two created, one adopted


def test_a_stripe_id_field_naming_a_missing_customer_fails_without_creating_one(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    sandboxes.salesforce.update("Account", "001000000000A02AAA", {FIELD: "cus_DoesNotExist01"})

    report = run_sync("backfill")

    assert report.failed == 1 and report.exit_code == 1
    assert "001000000000A02AAA" not in customers_by_account(sandboxes)
    store = StateStore.open(db_url)
    try:
        assert store.links.get("default", "001000000000A02AAA") is None
        failure = next(o for _, _, o in store.runs.recent_failures() if o.account_id == "001000000000A02AAA")
        assert failure.error_code == "adopt_customer_missing"
        assert "cus_DoesNotExist01" in (failure.error_message or "")
        # The field is left as the admin set it.
        assert sandboxes.salesforce.get("Account", "001000000000A02AAA")[FIELD] == "cus_DoesNotExist01"
    finally:
        store.close()


def test_a_create_whose_answer_was_lost_is_not_duplicated(sandboxes: SandboxPair, run_sync: Callable[..., RunReport]) -> None:
    # Stripe applies the first create, then the connection drops before the answer arrives.
    sandboxes.stripe.inject_fault(method="POST", path=r"^/v1/customers$", drop="after", count=1)

    first = run_sync("backfill", config=None)
    second = run_sync("sync")

    assert first.failed + first.created == 3
    assert second.failed == 0
    by_account = customers_by_account(sandboxes)
    assert set(by_account) == BILLED
    assert all(len(v) == 1 for v in by_account.values()), {k: [c["id"] for c in v] for k, v in by_account.items()}


def test_a_new_activated_order_for_a_new_account_creates_one_customer_and_writes_back(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    run_sync("backfill")
    acc = sandboxes.salesforce.create("Account", {"Name": "Hooli", "BillingCountry": "Canada"})
    order = sandboxes.salesforce.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-06-01"})
    assert run_sync("sync").created == 0  # a draft order does not bill
    sandboxes.salesforce.update("Order", order, {"Status": "Activated"})

    report = run_sync("sync")

    assert report.created == 1
    [customer] = customers_by_account(sandboxes)[acc]
    assert customer["address"]["country"] == "CA"
    assert sandboxes.salesforce.get("Account", acc)[FIELD] == customer["id"]


def test_orders_read_incrementally_after_the_first_run(sandboxes: SandboxPair, run_sync: Callable[..., RunReport],
                                                        make_config: Callable[..., Any]) -> None:
    cfg = make_config(salesforce={"overlap_seconds": 0})
    run_sync("backfill", config=cfg)
    run_sync("sync", config=cfg)  # reads what the write-back touched
    sandboxes.salesforce.advance_clock(3600)
    quiet = run_sync("sync", config=cfg)
    # Only the records at the cursor's boundary are read again (>=, never skipped), at no cost.
    assert quiet.orders_read < 4 and quiet.stripe_calls == 0

    sandboxes.salesforce.update("Account", "001000000000A01AAA", {"Description": "changed"})
    report = run_sync("sync", config=cfg)

    assert report.updated == 1 and report.stripe_calls == 1
    assert report.orders_read <= quiet.orders_read + 1


def test_a_lost_create_is_finished_with_its_own_key_even_after_the_account_changed(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport]
) -> None:
    # The first create is applied by Stripe but its answer is lost, also on the client's two
    # retries with the same key: the record fails with the customer already made.
    # Aimed at Acme by its account id: the creates go out concurrently.
    sandboxes.stripe.inject_fault(
        method="POST", path=r"^/v1/customers$", drop="after", count=3, body_contains="001000000000A01AAA"
    )
    first = run_sync("backfill")
    assert first.failed == 1 and first.created == 2
    assert len(sandboxes.stripe.customers()) == 3
    sandboxes.salesforce.update("Account", "001000000000A01AAA", {"Name": "Acme Renamed Meanwhile"})
    sandboxes.salesforce.update("Account", "001000000000A02AAA", {"Name": "Initech Renamed Meanwhile"})
    sandboxes.salesforce.update("Account", "001000000000M01AAA", {"Name": "Multi Renamed Meanwhile"})

    second = run_sync("sync")

    assert second.failed == 0
    by_account = customers_by_account(sandboxes)
    assert set(by_account) == BILLED and all(len(v) == 1 for v in by_account.values())
    assert len(sandboxes.stripe.customers()) == 3
    assert {c["name"] for c in sandboxes.stripe.customers()} == {
        "Acme Renamed Meanwhile", "Initech Renamed Meanwhile", "Multi Renamed Meanwhile"}


def test_a_windowed_backfill_takes_only_orders_activated_in_the_window(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    from datetime import UTC, datetime

    report = run_sync("backfill", since=datetime(2026, 1, 2, tzinfo=UTC), until=datetime(2026, 2, 15, tzinfo=UTC))

    # O01 (Jan 5, Acme) and O02 (Feb 1, Initech) are in; O04 (Jan 1) and O05 (Mar 1) are not.
    assert report.orders_read == 2 and report.created == 2
    assert set(customers_by_account(sandboxes)) == {"001000000000A01AAA", "001000000000A02AAA"}
    store = StateStore.open(db_url)
    try:
        # A windowed backfill did not read everything, so the incremental cursor stays unset
        # and the first sync still reads every activated order.
        assert store.cursors.get(ORDERS_CURSOR) is None
    finally:
        store.close()
    assert run_sync("sync").created == 1


def test_metadata_is_trimmed_and_stripes_limits_are_enforced_before_sending() -> None:
    import pytest

    from connector.billing.stripe import check_metadata
    from connector.errors import RecordError

    assert check_metadata({" region ": "  EMEA \n", "empty": "   ", "n": None}) == {"region": "EMEA", "empty": "", "n": ""}
    with pytest.raises(RecordError, match="longer than 40"):
        check_metadata({"k" * 41: "v"})
    with pytest.raises(RecordError, match="longer than 500"):
        check_metadata({"k": "v" * 501})
    with pytest.raises(RecordError, match="more than 50"):
        check_metadata({f"k{i}": "v" for i in range(51)})
    assert len(check_metadata({f"k{i}": "v" for i in range(50)})) == 50


def test_two_billing_accounts_each_get_one_customer_per_billed_account_with_separate_links(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], make_config: Callable[..., Any], db_url: str
) -> None:
    from connector.sandbox.stripe import StripeSandbox

    with StripeSandbox() as eu:
        cfg = make_config(billing={"accounts": [
            {"id": "us", "api_base": sandboxes.stripe.url},
            {"id": "eu", "api_base": eu.url, "api_key_env": "STRIPE_API_KEY"},
        ]})
        first = run_sync("backfill", config=cfg)
        again = run_sync("sync", config=cfg)
        eu_customers = {c["metadata"]["salesforce_account_id"]: c["id"] for c in eu.customers()}

    us_customers = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    assert first.created == 6 and again.stripe_calls == 0
    assert first.exit_code == again.exit_code == 0 and again.refused == 0
    assert set(us_customers) == set(eu_customers) == BILLED
    store = StateStore.open(db_url)
    try:
        us_links = store.links.get_many("us", BILLED)
        eu_links = store.links.get_many("eu", BILLED)
    finally:
        store.close()
    assert {a: ln.customer_id for a, ln in us_links.items()} == us_customers
    assert {a: ln.customer_id for a, ln in eu_links.items()} == eu_customers
    # One Stripe Id field on the Account: it holds the first billing account's customer.
    for account_id in BILLED:
        assert sandboxes.salesforce.get("Account", account_id)[FIELD] == us_customers[account_id]
