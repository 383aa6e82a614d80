"""The store itself, on SQLite and on PostgreSQL: its URL, aware timestamps, one transaction that
every repository joins, and the numbers for `status`. Each repository has its own file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from state_fixtures import T0, account_id, db_url, make_link, make_order, store

from connector.state.records import Intent, Outcome
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def test_url_hides_password_and_names_dialect(store: StateStore) -> None:
    assert store.dialect in ("sqlite", "postgresql")
    assert store.url.startswith(store.dialect)
    assert "***" not in store.url


def test_url_never_contains_a_password(tmp_path: Any) -> None:
    s = StateStore(
        sa.create_engine("postgresql+psycopg://bc:s3cret@db.example/state"),
        db_path=None,
        busy_timeout=1,
    )
    assert "s3cret" not in s.url and s.url == "postgresql+psycopg://bc@db.example/state"


def test_timestamps_come_back_aware_utc_and_naive_ones_are_refused(store: StateStore) -> None:
    store.links.save([make_link(account_id(1), first_synced_at=T0, last_synced_at=T0)])
    link = store.links.get("default", account_id(1))
    assert link is not None and link.first_synced_at == T0
    assert link.first_synced_at.tzinfo is UTC
    with pytest.raises(Exception, match="naive datetime"):
        store.links.save([make_link(account_id(2), first_synced_at=datetime(2026, 1, 1))])


def test_transaction_groups_calls_and_rolls_back_together(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.cursors.set("orders", "a")
        with store.transaction():  # nested: joins
            store.links.save([make_link(account_id(1))])
        raise RuntimeError("boom")
    assert store.cursors.get("orders") is None
    assert store.links.get("default", account_id(1)) is None
    with store.transaction():
        store.cursors.set("orders", "b")
        assert store.cursors.get("orders") == "b"  # reads inside see the transaction's writes
    assert store.cursors.get("orders") == "b"


def test_every_repository_joins_the_store_transaction(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        run_id = store.runs.start("sync", dry_run=False)
        store.runs.record_outcomes(run_id, [Outcome(account_id(1), "default", "created")])
        store.links.save([make_link(account_id(1))])
        store.links.save_order_links([make_order("801A", account_id(1))])
        store.cursors.set("orders", "a")
        store.retries.schedule("default", {account_id(2): "e"}, now=T0)
        store.intents.record(Intent("default", account_id(3), "k", "h", T0))
        store.conflicts.open("x", billing_account="default", account_id=account_id(4))
        raise RuntimeError("the batch failed half-way")

    assert store.runs.recent() == []
    assert store.links.get("default", account_id(1)) is None
    assert store.links.order_links("default", ["801A"]) == {}
    assert store.cursors.get("orders") is None
    assert store.retries.all("default") == []
    assert store.intents.open("default") == []
    assert store.conflicts.list(None) == []


def test_stats(store: StateStore) -> None:
    store.links.save([make_link(account_id(1)), make_link(account_id(2), status="held")])
    store.conflicts.open("x", billing_account="default", account_id=account_id(2))
    store.retries.schedule("default", {account_id(3): "e"}, now=T0)
    store.cursors.set("orders:default", "2026-01-01T00:00:00Z")
    run_id = store.runs.start("sync", dry_run=False)
    stats = store.stats()
    assert stats["links"] == {"default": {"active": 1, "held": 1}}
    assert stats["open_conflicts"] == 1
    assert stats["retries"] == {"due": 1, "total": 1}
    assert stats["cursors"]["orders:default"]["value"] == "2026-01-01T00:00:00Z"
    assert stats["last_run"]["run_id"] == run_id
    assert stats["database"]["revision"] == StateStore.head_revision()
