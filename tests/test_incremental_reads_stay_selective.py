"""Incremental syncs read one selective query per watched object (issue 15): no filter ORs
fields of different objects, a QUERY_TIMEOUT narrows the window instead of stalling syncing,
and each object's cursor moves only to the end of a window whose orders were applied.

Every SOQL the sandbox org receives is inspected through its own parser; time moves by the
sandbox's logical clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fault_readback import customers_by_account, opened

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import CHANGES_CURSOR, ORDERS_CURSOR, RunReport
from connector.salesforce import parse_sf_datetime
from connector.sandbox.run import SandboxPair
from connector.sandbox.soql import Comparison, Condition, Not, Query, parse

ACME, INITECH, MULTI = "001000000000A01AAA", "001000000000A02AAA", "001000000000M01AAA"
JANE = "003000000000C01AAA"


def run(cfg: Config, secrets: SecretSource, mode: str = "sync", **kwargs: Any) -> RunReport:
    stop = kwargs.pop("stop", None)
    on_progress = kwargs.pop("on_progress", None)
    with open_pipeline(cfg, secrets, stop=stop, on_progress=on_progress) as p:
        return p.engine.run(mode, **kwargs)  # type: ignore[arg-type]


def objects_in(cond: Condition) -> set[str]:
    """The objects whose fields a condition filters: '' for the queried object itself, else the
    relationship path (`Account`, `BillToContact`, `SBQQ__Quote__r.SBQQ__PrimaryContact__r`)."""
    if isinstance(cond, Comparison):
        return {".".join(cond.path.parts[:-1]).casefold()}
    if isinstance(cond, Not):
        return objects_in(cond.item)
    out: set[str] = set()
    for item in cond.items:
        out |= objects_in(item)
    return out


def ors_across_objects(cond: Condition | None) -> list[set[str]]:
    if cond is None or isinstance(cond, Comparison):
        return []
    if isinstance(cond, Not):
        return ors_across_objects(cond.item)
    found = [objects_in(cond)] if cond.op == "OR" and len(objects_in(cond)) > 1 else []
    for item in cond.items:
        found += ors_across_objects(item)
    return found


def stamp_filters_through_relationships(q: Query) -> list[str]:
    def walk(cond: Condition | None) -> list[str]:
        if cond is None:
            return []
        if isinstance(cond, Comparison):
            p = cond.path.parts
            return [cond.path.text] if len(p) > 1 and p[-1].casefold() == "systemmodstamp" else []
        if isinstance(cond, Not):
            return walk(cond.item)
        return [t for item in cond.items for t in walk(item)]

    return walk(q.where)


def names(sandboxes: SandboxPair) -> dict[str, Any]:
    return {a: cs[0].get("name") for a, cs in customers_by_account(sandboxes).items()}


def emails(sandboxes: SandboxPair) -> dict[str, Any]:
    return {a: cs[0].get("email") for a, cs in customers_by_account(sandboxes).items()}


def synced(
    make_config: Callable[..., Config], secrets: SecretSource, **salesforce: Any
) -> Config:
    """A config for the sandboxes (`salesforce` overrides its section) after a backfill and a
    first sync, so every object's cursor is set."""
    cfg = make_config(salesforce=salesforce) if salesforce else make_config()
    run(cfg, secrets, "backfill")
    run(cfg, secrets)
    return cfg


def rename_an_hour_apart(sandboxes: SandboxPair, acme: str, multi: str) -> None:
    """An hour on, Acme is renamed; another hour on, Multi; then a minute passes."""
    sf = sandboxes.salesforce
    sf.advance_clock(3600)
    sf.update("Account", ACME, {"Name": acme})
    sf.advance_clock(3600)
    sf.update("Account", MULTI, {"Name": multi})
    sf.advance_clock(60)


def account_cursor(db_url: str) -> str | None:
    with opened(db_url) as store:
        return store.cursors.get(CHANGES_CURSOR.format("Account"))


def test_an_incremental_sync_sends_no_filter_that_ors_fields_of_different_objects(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    sf = sandboxes.salesforce
    cfg = synced(make_config, secrets)
    sf.advance_clock(3600)
    # One change through each watched object: an account, a bill-to contact, a quote's primary
    # contact, and a new activated order.
    quote = sf.create("SBQQ__Quote__c", {"SBQQ__Account__c": INITECH, "SBQQ__PrimaryContact__c": JANE})
    sf.update("Order", "801000000000O02AAA", {"SBQQ__Quote__c": quote})
    sf.advance_clock(600)
    sf.update("Account", MULTI, {"Name": "Multi Order Renamed"})
    sf.update("Contact", JANE, {"Email": "jane@acme-new.example"})
    new_acc = sf.create("Account", {"Name": "Fresh Ltd", "BillingCountry": "Germany"})
    order = sf.create("Order", {"AccountId": new_acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
    sf.update("Order", order, {"Status": "Activated"})
    before = len(sf.soql_received())

    report = run(cfg, secrets)

    assert report.exit_code == 0, report.error
    sent = sf.soql_received()[before:]
    assert sent
    parsed = [parse(q) for q in sent]
    offending = [(q, ors_across_objects(p.where)) for q, p in zip(sent, parsed, strict=True)]
    assert not [o for o in offending if o[1]], offending
    through = [(q, stamp_filters_through_relationships(p)) for q, p in zip(sent, parsed, strict=True)]
    assert not [t for t in through if t[1]], through
    # Each watched object was asked for its own changes.
    asked = {p.sobject for q, p in zip(sent, parsed, strict=True) if "SystemModstamp >=" in q}
    assert {"Order", "Account", "Contact", "SBQQ__Quote__c"} <= asked
    # And every change reached billing.
    assert names(sandboxes)[MULTI] == "Multi Order Renamed"
    assert names(sandboxes)[new_acc] == "Fresh Ltd"
    assert emails(sandboxes)[ACME] == "jane@acme-new.example"
    assert emails(sandboxes)[INITECH] == "jane@acme-new.example"  # through the quote's contact


def test_a_query_timeout_halves_the_window_and_the_sync_goes_on(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    cfg = synced(make_config, secrets)
    rename_an_hour_apart(sandboxes, "Acme Early", "Multi Late")
    # A large org: Salesforce answers a window of Account changes wider than 20 minutes with
    # QUERY_TIMEOUT (as a 400 with Salesforce's error body).
    timeouts = sandboxes.salesforce.time_out_queries("Account", wider_than=1200)
    before = account_cursor(db_url)

    report = run(cfg, secrets)

    assert report.exit_code == 0 and report.status == "succeeded", report.error
    assert timeouts.hits >= 2
    assert names(sandboxes)[ACME] == "Acme Early" and names(sandboxes)[MULTI] == "Multi Late"
    after = account_cursor(db_url)
    with opened(db_url) as store:
        summary = store.cursors.get(ORDERS_CURSOR)
    assert parse_sf_datetime(after) > parse_sf_datetime(before)  # type: ignore[operator]
    assert parse_sf_datetime(summary) == parse_sf_datetime(after)
    again = run(cfg, secrets)
    assert again.exit_code == 0 and again.stripe_calls == 0


def test_an_object_cursor_moves_per_finished_slice_and_never_past_an_unapplied_change(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    sf = sandboxes.salesforce
    # No overlap: the window starts at the cursor, so ACME is read by the Account window only.
    cfg = synced(make_config, secrets, overlap_seconds=0)
    rename_an_hour_apart(sandboxes, "Acme First Slice", "Multi Second Slice")
    sf.time_out_queries("Account", wider_than=2400)
    start = parse_sf_datetime(account_cursor(db_url))
    stop = threading.Event()

    def stop_after_the_first_slice(done: int, total: int | None) -> None:
        # Called before each write: once ACME's slice is applied, the next write stops the run.
        if names(sandboxes).get(ACME) == "Acme First Slice":
            stop.set()

    first = run(cfg, secrets, stop=stop, on_progress=stop_after_the_first_slice)

    assert first.status == "interrupted"
    assert names(sandboxes)[ACME] == "Acme First Slice"
    assert names(sandboxes)[MULTI] != "Multi Second Slice"
    moved = parse_sf_datetime(account_cursor(db_url))
    multi_stamp = parse_sf_datetime(sf.get("Account", MULTI)["SystemModstamp"])
    assert start is not None and moved is not None and multi_stamp is not None
    # The first slice was finished: the cursor left the start; the change not applied is ahead.
    assert start < moved <= multi_stamp

    second = run(cfg, secrets)

    assert second.exit_code == 0, second.error
    assert names(sandboxes)[MULTI] == "Multi Second Slice"


def test_a_window_that_times_out_at_any_width_fails_the_run_and_keeps_that_objects_cursor(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    sf = sandboxes.salesforce
    cfg = synced(make_config, secrets, overlap_seconds=0)
    sf.advance_clock(3600)
    sf.update("Account", ACME, {"Name": "Acme Never Read"})
    timeouts = sf.time_out_queries("Account", wider_than=0)
    before = account_cursor(db_url)
    writes = sandboxes.stripe.write_count

    report = run(cfg, secrets)

    assert report.status == "failed" and report.exit_code == 3
    assert "QUERY_TIMEOUT" in (report.error or "")
    assert timeouts.hits > 1  # it narrowed the window before giving up
    assert sandboxes.stripe.write_count == writes
    assert account_cursor(db_url) == before
    timeouts.times = 0
    assert run(cfg, secrets).exit_code == 0
    assert names(sandboxes)[ACME] == "Acme Never Read"


def test_a_store_with_only_the_single_cursor_of_the_previous_release_starts_every_object_there(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    sf = sandboxes.salesforce
    cfg = synced(make_config, secrets, overlap_seconds=0)
    with opened(db_url) as store:
        legacy = store.cursors.get(ORDERS_CURSOR)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cursors WHERE name LIKE 'salesforce.changes.%'"))
    engine.dispose()
    sf.advance_clock(600)
    sf.update("Account", INITECH, {"Name": "Initech After Upgrade"})
    before = len(sf.soql_received())

    report = run(cfg, secrets)

    assert report.exit_code == 0 and report.updated == 1 and report.created == 0
    assert names(sandboxes)[INITECH] == "Initech After Upgrade"
    windows = [q for q in sf.soql_received()[before:] if "SystemModstamp >=" in q and "IsDeleted" not in q]
    assert windows and all(_iso_ms(legacy) in q for q in windows)
    with opened(db_url) as store:
        for obj in ("Order", "Account", "Contact", "SBQQ__Quote__c"):
            assert store.cursors.get(CHANGES_CURSOR.format(obj)) is not None


def _iso_ms(stamp: str | None) -> str:
    dt = parse_sf_datetime(stamp)
    assert dt is not None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def order_reads(sent: list[str]) -> list[str]:
    """Queries that read orders whole (the affected accounts' orders)."""
    return [q for q in sent if q.startswith("SELECT Id, AccountId, ActivatedDate")]


def test_the_connectors_own_write_backs_do_not_make_accounts_look_changed(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    sf = sandboxes.salesforce
    cfg = make_config(salesforce={"overlap_seconds": 0})
    sf.advance_clock(60)  # the org's data is a minute old: only write-backs follow the snapshot
    backfill = run(cfg, secrets, "backfill")
    assert backfill.created == 3
    assert all(sf.get("Account", a)["Stripe_Customer_Id__c"] for a in (ACME, INITECH, MULTI))
    before = len(sf.soql_received())

    quiet = run(cfg, secrets)

    # The write-backs changed the three accounts' SystemModstamp after the backfill's
    # snapshot: they are in the Account window, and recognised as the connector's own.
    sent = sf.soql_received()[before:]
    assert any(q.startswith("SELECT Id, SystemModstamp") and "FROM Account" in q for q in sent)
    assert quiet.exit_code == 0 and quiet.orders_read == 0 and quiet.stripe_calls == 0
    assert not order_reads(sent), order_reads(sent)

    # An edit of a field nothing reads is skipped the same way; an edit of a read field is not.
    sf.advance_clock(60)
    sf.update("Account", INITECH, {"Website": "https://initech.example"})
    sf.update("Account", MULTI, {"Name": "Multi Edited"})
    edited = run(cfg, secrets)
    assert edited.updated == 1 and edited.orders_read == 2  # Multi's two orders only
    assert names(sandboxes)[MULTI] == "Multi Edited"

    # An admin who puts another customer id in the write-back field is not mistaken for it.
    sf.advance_clock(60)
    sf.update("Account", INITECH, {"Stripe_Customer_Id__c": "cus_SetByAnAdmin"})
    pasted = run(cfg, secrets)
    assert pasted.orders_read == 1  # Initech's order was read again


def test_an_edit_saved_between_the_read_and_the_write_back_is_not_taken_for_the_write_back(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource
) -> None:
    sf = sandboxes.salesforce
    cfg = make_config(salesforce={"overlap_seconds": 0})
    edited = threading.Event()

    def edit_after_the_read(done: int, total: int | None) -> None:
        # The backfill has read the orders; before its write-backs, an admin renames Acme.
        # The write-back then comes last, by the integration user: LastModifiedById would say
        # the connector made the latest change.
        if not edited.is_set():
            edited.set()
            sf.update("Account", ACME, {"Name": "Acme Renamed Mid-Run"})

    first = run(cfg, secrets, "backfill", on_progress=edit_after_the_read)
    assert first.exit_code == 0 and edited.is_set()
    assert sf.get("Account", ACME)["Stripe_Customer_Id__c"]
    assert names(sandboxes)[ACME] != "Acme Renamed Mid-Run"

    after = run(cfg, secrets)

    assert after.exit_code == 0 and after.updated == 1
    assert names(sandboxes)[ACME] == "Acme Renamed Mid-Run"
