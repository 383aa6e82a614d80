"""A re-check of unchanged orders rewrites no order link and no cross-reference, on SQLite and
PostgreSQL; a new order of an unchanged account is still recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from conftest import BILLED

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME = "001000000000A01AAA"


def rows(db_url: str, table: str, key: str) -> dict[str, tuple[Any, ...]]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM {table}"))
            return {r._mapping[key]: tuple(r) for r in result}
    finally:
        engine.dispose()


def test_a_recheck_of_unchanged_orders_rewrites_nothing(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    first = run_sync("backfill")
    assert first.created == len(BILLED)
    orders, links = rows(db_url, "order_links", "order_id"), rows(db_url, "links", "account_id")
    assert len(orders) == 4  # the small org's activated orders

    again = run_sync("recheck")

    assert again.unchanged == len(BILLED) and again.stripe_calls == 0
    # Not one row rewritten: last_seen_at / last_synced_at would have moved.
    assert rows(db_url, "order_links", "order_id") == orders
    assert rows(db_url, "links", "account_id") == links


def test_a_new_order_of_an_unchanged_account_is_still_recorded(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    run_sync("backfill")
    before = rows(db_url, "order_links", "order_id")
    sf = sandboxes.salesforce
    order = sf.create("Order", {"AccountId": ACME, "Status": "Draft", "EffectiveDate": "2025-01-01"})
    sf.update("Order", order, {"Status": "Activated", "ActivatedDate": "2025-01-01T10:00:00.000+0000"})

    report = run_sync("recheck")

    assert report.stripe_calls == 0  # an older order: the account's customer is unchanged
    after = rows(db_url, "order_links", "order_id")
    assert set(after) - set(before) == {order}
    assert {k: v for k, v in after.items() if k != order} == before
