"""The planner's every branch, in memory: order row + link + context -> one PlannedWrite.

No server, no store, no SDK: a tiny in-memory target (tests/memory_target.py) implements the port
and supplies the batched context the engine would fetch. Each row of the table names a situation
an account can be in and the action (and reason code) the run must take for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from memory_target import MEMORY_RULES, MemoryTarget

from connector.errors import MappingError
from connector.mapping import CustomerMapping, load_mapping, payload_hash
from connector.planner import (
    LINKS,
    WRITES,
    Lookup,
    PlanContext,
    PlannedWrite,
    create_key,
    plan_record,
    tagged_payload,
)
from connector.salesforce import OrderRow
from connector.state.records import Intent, Link

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACC, PARENT, OTHER = "001000000000A01AAA", "001000000000P01AAA", "001000000000X01AAA"
ORG = "00D000000000001"
BA = "main"
WB_FIELD = "Billing_Id__c"


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> CustomerMapping:
    folder = tmp_path_factory.mktemp("mapping")
    (folder / "customer.yaml").write_text(
        "target: customer\nfields:\n"
        "  name: {from: Account.Name, transforms: [trim]}\n"
        "  phone: {from: Account.Phone}\n"
        "  metadata.parent_customer: {from: Account.ParentId, transforms: [link]}\n",
        encoding="utf-8",
    )
    return load_mapping(folder / "customer.yaml")


def row(*, name: str = "Acme", field: str | None = None, order: str = "801000000000O01AAA",
        activated: str = "2026-01-05T10:00:00.000+0000", parent: str | None = PARENT) -> OrderRow:
    record = {"Id": order, "AccountId": ACC, "ActivatedDate": activated,
              "Account": {"Name": name, "Phone": None, "ParentId": parent}}
    return OrderRow(order_id=order, account_id=ACC, activated_at=activated, watermark=None,
                    record=record,
                    writeback_values={WB_FIELD: field})


def payload_of(mapping: CustomerMapping, r: OrderRow, links: dict[str, str] | None = None) -> dict[str, Any]:
    return tagged_payload(mapping.evaluate(r.record, link=(links or {}).get), ACC, ORG, MEMORY_RULES)


def linked(mapping: CustomerMapping, *, customer: str = "cus_1", same_payload: bool = True, **changes: Any) -> Link:
    p = payload_of(mapping, row())
    base = Link(billing_account=BA, account_id=ACC, customer_id=customer,
                payload_hash=payload_hash(p) if same_payload else "old", payload=p,
                mapping_fingerprint=mapping.fingerprint, basis_order_id="801000000000O01AAA",
                basis_order_activated_at="2026-01-05T10:00:00.000+0000", writeback_pending=False,
                first_synced_at=NOW - timedelta(days=3), last_synced_at=NOW - timedelta(days=2))
    return replace(base, **changes)


def context(mapping: CustomerMapping, target: MemoryTarget | None = None, *, named: tuple[str, ...] = (),
            **kw: Any) -> PlanContext:
    """The context the engine fetches in batches: the target answers for customers named by fields."""
    customers = target.fetch_customers(list(named)) if target is not None and named else {}
    return PlanContext(billing_account=BA, org_id=ORG, fingerprint=mapping.fingerprint, now=NOW,
                       writeback_field=WB_FIELD, customers=customers, **kw)


def intent(age: timedelta, *, payload: dict[str, Any] | None, digest: str = "h") -> Intent:
    return Intent(billing_account=BA, account_id=ACC, idempotency_key="bc1-interrupted",
                  payload_hash=digest, created_at=NOW - age, payload=payload)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[CustomerMapping, MemoryTarget], tuple[OrderRow, Link | None, PlanContext]]
    action: str
    code: str | None = None


def _adopt_ok(m: CustomerMapping, t: MemoryTarget) -> Any:
    t.add_customer({"name": "Old"}, customer_id="cus_field")
    return row(field="cus_field"), None, context(m, t, named=("cus_field",))


def _adopt_deleted(m: CustomerMapping, t: MemoryTarget) -> Any:
    t.add_customer({"name": "Old"}, customer_id="cus_field")
    t.deleted.add("cus_field")
    return row(field="cus_field"), None, context(m, t, named=("cus_field",))


def _adopt_tagged_other(m: CustomerMapping, t: MemoryTarget) -> Any:
    t.add_customer({"metadata": {"salesforce_account_id": OTHER}}, customer_id="cus_field")
    return row(field="cus_field"), None, context(m, t, named=("cus_field",))


CASES = [
    Case("new account: create", lambda m, t: (row(), None, context(m)), "create"),
    Case("held by an open conflict", lambda m, t: (row(), linked(m), context(m, held=frozenset({ACC}))),
         "refused", "conflict_open"),
    Case("link merged away", lambda m, t: (row(), linked(m, status="merged"), context(m)), "refused", "conflict_open"),
    Case("link held, admin chose --new", lambda m, t: (row(), linked(m, status="held"),
                                                        context(m, fresh={ACC: NOW - timedelta(hours=1)})), "create"),
    Case("admin chose --new, not yet created", lambda m, t: (row(), linked(m), context(m, fresh={ACC: NOW - timedelta(hours=1)})),
         "create"),
    Case("admin chose --new, created since", lambda m, t: (row(), linked(m, last_synced_at=NOW),
                                                           context(m, fresh={ACC: NOW - timedelta(hours=1)})), "unchanged"),
    Case("an older order of a linked account", lambda m, t: (
        row(order="801000000000O00AAA", activated="2025-01-01T00:00:00.000+0000", name="Other"), linked(m, same_payload=False),
        context(m)), "unchanged"),
    Case("same payload as last written", lambda m, t: (row(), linked(m), context(m)), "unchanged"),
    Case("changed payload", lambda m, t: (row(name="Acme Renamed"), linked(m), context(m)), "update"),
    Case("changed mapping, same values", lambda m, t: (row(), linked(m, mapping_fingerprint="old"), context(m)), "unchanged"),
    Case("field names the linked customer", lambda m, t: (row(field="cus_1"), linked(m), context(m)), "unchanged"),
    Case("field names another customer, nobody's", lambda m, t: (row(field="cus_2"), linked(m), context(m)),
         "refused", "writeback_field_mismatch"),
    Case("field names another account's customer", lambda m, t: (row(field="cus_2"), linked(m),
                                                                  context(m, owners={"cus_2": OTHER})),
         "refused", "winner_field_names_other_customer"),
    Case("admin-linked account, field names the old customer", lambda m, t: (
        row(field="cus_2"), linked(m, payload_hash=None, payload=None, mapping_fingerprint=None), context(m)), "update"),
    Case("field set, not linked: adopt", _adopt_ok, "adopt"),
    Case("field names a customer that does not exist", lambda m, t: (
        row(field="cus_missing"), None, context(m, t, named=("cus_missing",))), "failed", "adopt_customer_missing"),
    Case("field names a deleted customer", _adopt_deleted, "failed", "adopt_customer_missing"),
    Case("field names a customer tagged for another account", _adopt_tagged_other, "refused",
         "customer_belongs_to_other_account"),
    Case("field names a customer linked to another account", lambda m, t: (
        row(field="cus_field"), None, context(m, owners={"cus_field": OTHER})), "refused", "customer_linked_elsewhere"),
    Case("field's customer could not be read", lambda m, t: (
        row(field="cus_field"), None, context(m, customer_errors={"cus_field": "rate limited"})), "failed",
         "adopt_lookup_failed"),
    Case("field of a billing account that does not write back", lambda m, t: (
        row(field="cus_field"), None, replace(context(m), writeback_field=None)), "create"),
    Case("interrupted create inside the window: replay", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(hours=1), payload={"name": "Acme"})})), "replay"),
    Case("interrupted create past the window, found by tag", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(days=2), payload={"name": "Acme"})},
                             lookups={ACC: Lookup(("cus_found",))})), "reconcile"),
    Case("interrupted create past the window, nothing found", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(days=2), payload={"name": "Acme"})},
                             lookups={ACC: Lookup(())})), "create"),
    Case("interrupted create past the window, two found", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(days=2), payload={"name": "Acme"})},
                             lookups={ACC: Lookup(("cus_a", "cus_b"))})), "failed", "duplicate_customers"),
    Case("interrupted create without its payload, found by tag", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(hours=1), payload=None)},
                             lookups={ACC: Lookup(("cus_found",))})), "reconcile"),
    Case("interrupted create past the window, search unavailable", lambda m, t: (
        row(), None, context(m, intents={ACC: intent(timedelta(days=2), payload={"name": "Acme"})},
                             lookups={ACC: Lookup(error="billing account 'main' cannot search customers")})),
         "failed", "reconcile_lookup_unavailable"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_situation_is_planned_as_the_run_must_act(case: Case, mapping: CustomerMapping) -> None:
    r, link, ctx = case.build(mapping, MemoryTarget(name=BA))

    planned = plan_record(r, link, ctx, mapping, MEMORY_RULES)

    assert (planned.action, planned.error_code) == (case.action, case.code), planned.reason
    assert planned.account_id == ACC and planned.billing_account == BA
    # Every write carries a key of fixed length that fits the tightest target; nothing else does.
    if planned.action in WRITES:
        assert planned.idempotency_key and len(planned.idempotency_key) <= MEMORY_RULES.idempotency_key_max
    else:
        assert planned.idempotency_key is None
    if planned.action in ("failed", "refused"):
        assert planned.reason


def test_the_connectors_tags_go_where_the_target_keeps_them(mapping: CustomerMapping) -> None:
    rules = replace(MEMORY_RULES, tag_field="meta_data")
    planned = plan_record(row(), None, context(mapping), mapping, rules)

    assert planned.payload["meta_data"] == {"salesforce_account_id": ACC, "salesforce_org_id": ORG}
    assert planned.idempotency_key == create_key(BA, ACC, planned.payload_hash)


def test_a_replay_sends_the_interrupted_payload_and_then_the_current_one(mapping: CustomerMapping) -> None:
    old = {"name": "Acme Before"}
    ctx = context(mapping, intents={ACC: intent(timedelta(hours=1), payload=old)})

    planned = plan_record(row(name="Acme After"), None, ctx, mapping, MEMORY_RULES)

    assert planned.action == "replay" and planned.idempotency_key == "bc1-interrupted"
    assert planned.create_payload == old and planned.payload["name"] == "Acme After"
    assert planned.followup_key is not None
    same = plan_record(row(), None, replace(ctx, intents={ACC: intent(
        timedelta(hours=1), payload=old, digest=payload_hash(payload_of(mapping, row())))}), mapping, MEMORY_RULES)
    assert same.followup_key is None


def test_a_failed_lookup_says_the_lookup_could_not_run(mapping: CustomerMapping) -> None:
    ctx = context(mapping, intents={ACC: intent(timedelta(days=3), payload={"name": "Acme"})},
                  lookups={ACC: Lookup(error="search answered 503")})

    planned = plan_record(row(), None, ctx, mapping, MEMORY_RULES)

    assert "could not run" in (planned.reason or "") and "search answered 503" in (planned.reason or "")
    assert "does not exist" not in (planned.reason or "") and "None" not in (planned.reason or "")


def test_the_link_transform_reads_the_links_in_the_context(mapping: CustomerMapping) -> None:
    without = plan_record(row(), None, context(mapping), mapping, MEMORY_RULES)
    with_parent = plan_record(row(), None, context(mapping, links={PARENT: "cus_parent"}), mapping, MEMORY_RULES)

    assert without.payload["metadata"]["parent_customer"] == ""
    assert with_parent.payload["metadata"]["parent_customer"] == "cus_parent"
    assert with_parent.action in LINKS


def test_an_update_lists_what_changed_and_an_admin_link_overwrites_the_field(mapping: CustomerMapping) -> None:
    planned = plan_record(row(name="Acme Renamed"), linked(mapping), context(mapping), mapping, MEMORY_RULES)
    admin = plan_record(row(field="cus_2"), linked(mapping, payload_hash=None, payload=None, mapping_fingerprint=None),
                        context(mapping), mapping, MEMORY_RULES)

    assert planned.changed_fields == ("name",) and not planned.overwrite_field
    assert admin.overwrite_field and admin.customer_id == "cus_1"


def test_a_mapping_that_cannot_be_evaluated_fails_the_record(mapping: CustomerMapping) -> None:
    class Broken:
        fingerprint = mapping.fingerprint

        def evaluate(self, record: Any, *, link: Any) -> Any:
            raise MappingError("bad value", file=Path("customer.yaml"), line=3, key="name")

    planned = plan_record(row(), None, context(mapping), Broken(), MEMORY_RULES)  # type: ignore[arg-type]

    assert planned.action == "failed" and planned.error_code == "mapping_error"
    assert "customer.yaml:3" in (planned.reason or "")


def test_planning_is_pure(mapping: CustomerMapping) -> None:
    target = MemoryTarget(name=BA)
    ctx = context(mapping, target, named=("cus_x",))
    calls = target.calls
    first = plan_record(row(field="cus_x"), None, ctx, mapping, MEMORY_RULES)
    second = plan_record(row(field="cus_x"), None, ctx, mapping, MEMORY_RULES)

    assert first == second and isinstance(first, PlannedWrite)
    assert target.calls == calls  # planning asks nothing of the target


def test_a_stale_intent_of_a_target_that_chooses_its_ids_is_created_again_not_searched(
    mapping: CustomerMapping,
) -> None:
    # The create asks for the same id under a new key; the target adopts what the lost one made.
    rules = replace(MEMORY_RULES, client_chosen_ids=True, search=False)
    ctx = context(mapping, intents={ACC: intent(timedelta(days=3), payload={"name": "Acme"})},
                  lookups={ACC: Lookup(error="billing account 'main' cannot search customers")})

    planned = plan_record(row(), None, ctx, mapping, rules)

    assert planned.action == "create"
    assert planned.idempotency_key != ctx.intents[ACC].idempotency_key
