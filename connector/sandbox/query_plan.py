"""What the sandbox org knows of Salesforce's query optimizer: which filters an index can lead,
whether a window of SystemModstamp is too wide to answer in time, and the `explain` answer.

Salesforce leads a query with an index when a filter on the queried object's own indexed field
(Id, Name, SystemModstamp, CreatedDate, lookups, external ids) is ANDed at the top, or when
every branch of a top-level OR is such a filter; a filter on a related object's field
(`Account.SystemModstamp` in a query of Order) never leads it. Anything else is a TableScan.
The explain answer's shape is Salesforce's `/query/?explain=` resource
(`{"plans": [{"cardinality", "fields", "leadingOperationType", "notes", "relativeCost",
"sobjectCardinality", "sobjectType"}], "sourceQuery"}`), plans cheapest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connector.sandbox.soql import BoolOp, Comparison, Condition, Literal, Not, Query

# Fields Salesforce indexes on every object (besides lookups and external ids).
INDEXED = frozenset({"id", "name", "systemmodstamp", "createddate", "recordtypeid", "ownerid"})
_SELECTIVE_OPS = frozenset({"=", "IN", "<", "<=", ">", ">="})


def _own_field(cmp: Comparison) -> str | None:
    """The queried object's field a comparison filters, or None when it goes through a relationship."""
    return cmp.path.parts[0].casefold() if len(cmp.path.parts) == 1 else None


def leading_index(where: Condition | None, indexed: frozenset[str]) -> list[str] | None:
    """The indexed own fields that can lead the query, or None for a table scan."""
    if where is None:
        return None
    if isinstance(where, Comparison):
        f = _own_field(where)
        if f is not None and f in indexed and where.op in _SELECTIVE_OPS:
            return [where.path.text]
        return None
    if isinstance(where, Not):
        return None
    if where.op == "AND":
        for item in where.items:
            found = leading_index(item, indexed)
            if found:
                return found
        return None
    # OR: every branch must be led by an index of the object itself.
    fields: list[str] = []
    for item in where.items:
        found = leading_index(item, indexed)
        if not found:
            return None
        fields += [f for f in found if f not in fields]
    return fields


def explain(query: Query, sobject: str, indexed: frozenset[str], cardinality: int) -> dict[str, Any]:
    lead = leading_index(query.where, indexed)
    scan = {
        "cardinality": cardinality,
        "fields": [],
        "leadingOperationType": "TableScan",
        "notes": [],
        "relativeCost": round(1.0 + cardinality / 1000, 3),
        "sobjectCardinality": cardinality,
        "sobjectType": sobject,
    }
    if lead is None:
        scan["notes"] = [
            {
                "description": "Not considering filter for optimization because unindexed",
                "fields": [],
                "tableEnumOrId": sobject,
            }
        ]
        return {"plans": [scan]}
    index = {
        "cardinality": max(1, cardinality // 10),
        "fields": lead,
        "leadingOperationType": "Index",
        "notes": [],
        "relativeCost": round(0.1 + cardinality / 100000, 3),
        "sobjectCardinality": cardinality,
        "sobjectType": sobject,
    }
    return {"plans": [index, scan]}


@dataclass
class QueryTimeouts:
    """Answer QUERY_TIMEOUT for queries of `sobject` whose SystemModstamp window is wider than
    `wider_than` (an open window is infinitely wide): a large org, where narrow windows answer
    and wide ones do not."""

    sobject: str
    wider_than: timedelta
    status: int = 400
    times: int = 1_000_000
    hits: int = 0

    def applies(self, query: Query) -> bool:
        if self.times <= 0 or query.sobject.casefold() != self.sobject.casefold():
            return False
        low, high = _window(query.where)
        if low is None and high is None:
            return False  # no SystemModstamp filter: not a window query
        if low is None or high is None:
            return True
        return high - low > self.wider_than


def _window(where: Condition | None) -> tuple[datetime | None, datetime | None]:
    low: datetime | None = None
    high: datetime | None = None
    items = where.items if isinstance(where, BoolOp) and where.op == "AND" else (where,)
    for item in items:
        if not isinstance(item, Comparison) or _own_field(item) != "systemmodstamp":
            continue
        value = item.value
        if not isinstance(value, Literal) or not isinstance(value.value, datetime):
            continue
        if item.op in (">", ">="):
            low = value.value if low is None else max(low, value.value)
        elif item.op in ("<", "<="):
            high = value.value if high is None else min(high, value.value)
    return low, high
