"""A create interrupted longer ago than the billing system keeps idempotency keys is reconciled
by a lookup by tag. When that lookup cannot run (search failing), the record fails saying so,
creates nothing, and keeps its intent for the next run (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from connector.billing.stripe import RULES
from connector.engine import RunReport
from connector.planner import create_key
from connector.sandbox.run import SandboxPair
from connector.state.records import Intent
from connector.state.store import StateStore

INITECH = "001000000000A02AAA"


def test_a_failing_lookup_says_it_could_not_run_and_creates_nothing(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    planned = {p.account_id: p for p in run_sync("sync", dry_run=True).plan}[INITECH]
    store = StateStore.open(db_url)
    try:
        store.intents.record(Intent(
            billing_account="default", account_id=INITECH,
            idempotency_key=create_key("default", INITECH, planned.payload_hash),
            payload_hash=planned.payload_hash,
            created_at=datetime.now(UTC) - RULES.idempotency_window - timedelta(hours=1),
            payload=dict(planned.payload)))
    finally:
        store.close()
    sandboxes.stripe.inject_fault(method="GET", path=r"/v1/customers/search", status=500, count=100)

    dry = run_sync("sync", dry_run=True)
    report = run_sync("sync")

    [p] = [p for p in dry.plan if p.account_id == INITECH]
    assert p.action == "failed" and p.error_code == "reconcile_lookup_unavailable"
    assert report.failed == 1 and report.created == 2
    assert INITECH not in {c["metadata"]["salesforce_account_id"] for c in sandboxes.stripe.customers()}
    store = StateStore.open(db_url)
    try:
        failure = next(o for _, _, o in store.runs.recent_failures() if o.account_id == INITECH)
        assert store.intents.get("default", INITECH) is not None
    finally:
        store.close()
    message = failure.error_message or ""
    assert "could not run" in message and "search failed" in message
    assert "does not exist" not in message and "None" not in message
