"""`mappings check --online`: ask Salesforce's query optimizer about every query a mapping makes
a sync send, and warn about each one it would answer with a full table scan.

A TableScan on a large org is a query that reads every row of the object on every run: it
times out (QUERY_TIMEOUT) once the object is big enough, and syncing stops. The usual causes
are a filter on a field without an index (`order_filter`) or a filter that ORs fields of
different objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.engine import account_fields, watched_relationships
from connector.mapping import CustomerMapping
from connector.salesforce import SalesforceSource


@dataclass(frozen=True, slots=True)
class ScanWarning:
    sobject: str
    soql: str
    notes: tuple[str, ...]

    def message(self) -> str:
        why = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (
            f"Salesforce would read every {self.sobject} (TableScan) for this query{why}; on a "
            f"large org it times out. Query: {self.soql}"
        )


def table_scans(
    source: SalesforceSource,
    mappings: Sequence[CustomerMapping],
    writeback_fields: Sequence[str],
) -> list[ScanWarning]:
    unique: dict[str, str] = {}
    for m in mappings:
        for f in m.soql_fields():
            unique.setdefault(f.casefold(), f)
    acc = account_fields([*unique.values(), *source.extra_fields], writeback_fields)
    for f in acc:
        unique.setdefault(f"account.{f.casefold()}", f"Account.{f}")
    fields = sorted(unique.values())
    watched = source.watched_objects(watched_relationships(fields))
    out = []
    for soql in source.queries_of(fields, watched, acc):
        plans: list[dict[str, Any]] = list(source.explain(soql).get("plans") or [])
        if plans and plans[0].get("leadingOperationType") == "TableScan":
            notes = tuple(
                str(n.get("description", ""))
                + (f": {', '.join(n['fields'])}" if n.get("fields") else "")
                for n in plans[0].get("notes") or []
            )
            out.append(ScanWarning(str(plans[0].get("sobjectType") or "?"), soql, notes))
    return out
