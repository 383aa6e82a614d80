"""The plan digest lets the planner skip evaluating a record read as it was when its link took
its payload, and never otherwise: every situation that could change the payload, or the
decision, evaluates (in memory, no server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from memory_target import MEMORY_RULES
from test_planner_decisions import ACC, NOW, PARENT, WB_FIELD, context, linked, row

from connector.mapping import CustomerMapping, load_mapping
from connector.planner import PlanContext, plan_digest, plan_record
from connector.salesforce import OrderRow
from connector.state.records import Link


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> CustomerMapping:
    """The planner table's mapping: a trimmed name, a phone, the parent's customer by `link`."""
    folder = tmp_path_factory.mktemp("mapping")
    (folder / "customer.yaml").write_text(
        "target: customer\nfields:\n"
        "  name: {from: Account.Name, transforms: [trim]}\n"
        "  phone: {from: Account.Phone}\n"
        "  metadata.parent_customer: {from: Account.ParentId, transforms: [link]}\n",
        encoding="utf-8",
    )
    return load_mapping(folder / "customer.yaml")


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every evaluation of a mapping, by account."""
    seen: list[str] = []
    original = CustomerMapping.evaluate

    def counted(self: CustomerMapping, record: Any, **kw: Any) -> dict[str, Any]:
        seen.append(str(record.get("AccountId")))
        return original(self, record, **kw)

    monkeypatch.setattr(CustomerMapping, "evaluate", counted)
    return seen


def settled(m: CustomerMapping) -> tuple[OrderRow, Link, PlanContext]:
    """An account whose link took the payload of `row()`: the digest stored with it."""
    links = {PARENT: "cus_parent"}
    link = linked(m, payload=None)
    ctx = context(m, links=links)
    # The link holds the payload this row evaluates to (with the parent's customer).
    planned = plan_record(row(), None, ctx, m, MEMORY_RULES)
    link = replace(link, payload=dict(planned.payload), payload_hash=planned.payload_hash)
    digest = plan_digest(row(), link, ctx, m)
    assert digest is not None
    return row(), link, replace(ctx, digests={ACC: digest})


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[
        [CustomerMapping, OrderRow, Link, PlanContext], tuple[OrderRow, Link, PlanContext]
    ]
    action: str


CASES = [
    Case("a changed source field", lambda m, r, ln, c: (row(name="Acme Renamed"), ln, c), "update"),
    Case(
        "a changed mapping (the link's fingerprint is another)",
        lambda m, r, ln, c: (r, replace(ln, mapping_fingerprint="old"), c),
        "unchanged",
    ),
    Case(
        "a changed mapping (this run's fingerprint is another)",
        lambda m, r, ln, c: (r, ln, replace(c, fingerprint="new")),
        "unchanged",
    ),
    Case(
        "the link's payload changed by another path",
        lambda m, r, ln, c: (r, replace(ln, payload_hash="other", payload={"name": "x"}), c),
        "update",
    ),
    Case(
        "the link moved to another customer (xref link)",
        lambda m, r, ln, c: (r, replace(ln, customer_id="cus_9"), c),
        "unchanged",
    ),
    Case(
        "the parent behind `link` has another customer",
        lambda m, r, ln, c: (r, ln, replace(c, links={PARENT: "cus_parent_2"})),
        "update",
    ),
    Case(
        "the parent behind `link` is no longer linked",
        lambda m, r, ln, c: (r, ln, replace(c, links={})),
        "update",
    ),
    Case(
        "a digest stored before an apply that failed (the row changed since)",
        lambda m, r, ln, c: (row(name="Acme Renamed"), ln, c),
        "update",
    ),
    Case(
        "held by an open conflict",
        lambda m, r, ln, c: (r, ln, replace(c, held=frozenset({ACC}))),
        "refused",
    ),
    Case("the link is held", lambda m, r, ln, c: (r, replace(ln, status="held"), c), "refused"),
    Case(
        "the link is deleted (account restored)",
        lambda m, r, ln, c: (r, replace(ln, status="deleted"), c),
        "unchanged",
    ),
    Case(
        "an admin chose --new", lambda m, r, ln, c: (r, ln, replace(c, fresh={ACC: NOW})), "create"
    ),
    Case(
        "the write-back field names another customer",
        lambda m, r, ln, c: (row(field="cus_2"), ln, c),
        "refused",
    ),
    Case("no digest stored", lambda m, r, ln, c: (r, ln, replace(c, digests={})), "unchanged"),
    Case(
        "another billing account's digest",
        lambda m, r, ln, c: (r, ln, replace(c, billing_account="other")),
        "unchanged",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_anything_that_could_change_the_plan_evaluates(
    case: Case, mapping: CustomerMapping, evaluations: list[str]
) -> None:
    r, link, ctx = case.change(mapping, *settled(mapping))
    evaluations.clear()

    planned = plan_record(r, link, ctx, mapping, MEMORY_RULES)
    evaluations_made = len(evaluations)
    expected = plan_record(r, link, replace(ctx, digests={}), mapping, MEMORY_RULES)

    assert evaluations_made == 1 or planned.action == "refused"
    assert planned == expected
    assert planned.action == case.action


def test_a_record_read_as_when_its_link_was_written_is_not_evaluated(
    mapping: CustomerMapping, evaluations: list[str]
) -> None:
    r, link, ctx = settled(mapping)
    evaluations.clear()

    planned = plan_record(r, link, ctx, mapping, MEMORY_RULES)

    assert evaluations == []
    assert planned.action == "unchanged"
    assert planned.digest == ctx.digests[ACC]
    evaluated = plan_record(r, link, replace(ctx, digests={}), mapping, MEMORY_RULES)
    assert replace(planned, digest=None) == evaluated
    evaluations.clear()
    # Fields nothing reads (the write-back field naming the linked customer, a stamp) do not
    # change the digest.
    r2 = row(field=link.customer_id)
    r2.record["SystemModstamp"] = "2026-02-01T00:00:00.000+0000"
    assert plan_record(r2, link, ctx, mapping, MEMORY_RULES).action == "unchanged"
    assert evaluations == []


def test_the_digest_covers_what_the_mapping_reads_and_the_link(mapping: CustomerMapping) -> None:
    r, link, ctx = settled(mapping)
    base = plan_digest(r, link, ctx, mapping)

    assert plan_digest(row(name="Other"), link, ctx, mapping) != base
    assert plan_digest(r, replace(link, payload_hash="x"), ctx, mapping) != base
    assert plan_digest(r, replace(link, customer_id="cus_x"), ctx, mapping) != base
    assert plan_digest(r, link, replace(ctx, links={}), mapping) != base
    assert plan_digest(r, link, replace(ctx, org_id="00D000000000002"), mapping) != base
    assert plan_digest(r, link, replace(ctx, writeback_field=WB_FIELD), mapping) == base
