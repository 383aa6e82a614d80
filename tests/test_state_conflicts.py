"""`store.conflicts`: conflicts opened and resolved, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest
from state_fixtures import account_id, db_url, store

from connector.state.conflicts import ConflictResolutionError
from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def test_open_conflict_is_not_duplicated(store: StateStore) -> None:
    first = store.conflicts.open(
        "merge_loser_linked",
        billing_account="default",
        account_id=account_id(1),
        other_account_id=account_id(2),
        customer_id="cus_1",
        details={"merged_into": account_id(2)},
    )
    again = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert again == first
    assert first.status == "open" and first.details == {"merged_into": account_id(2)}
    assert first.created_at.tzinfo is UTC
    other_kind = store.conflicts.open(
        "merge_both_linked", billing_account="default", account_id=account_id(1)
    )
    assert other_kind.id != first.id
    assert len(store.conflicts.list()) == 2
    assert store.conflicts.held_accounts("default") == {account_id(1)}
    assert store.conflicts.held_accounts("eu") == set()


def test_resolve_conflict_records_who_and_when(store: StateStore) -> None:
    c = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    resolved = store.conflicts.resolve(c.id, resolution="kept winner", by="alice@example.com")
    assert (resolved.status, resolved.resolution, resolved.resolved_by) == (
        "resolved",
        "kept winner",
        "alice@example.com",
    )
    assert resolved.resolved_at is not None and resolved.resolved_at.tzinfo is UTC
    assert store.conflicts.get(c.id) == resolved
    assert store.conflicts.list() == []
    assert store.conflicts.list("resolved") == [resolved]
    assert store.conflicts.list(None) == [resolved]
    assert store.conflicts.held_accounts("default") == set()
    with pytest.raises(ConflictResolutionError, match=r"already resolved by alice@example\.com"):
        store.conflicts.resolve(c.id, resolution="again", by="bob")
    with pytest.raises(ConflictResolutionError, match=r"no conflict #999"):
        store.conflicts.resolve(999, resolution="x", by="bob")
    assert store.conflicts.get(999) is None
    # once resolved, the same kind can be opened again for the account
    reopened = store.conflicts.open(
        "merge_loser_linked", billing_account="default", account_id=account_id(1)
    )
    assert reopened.id != c.id and reopened.status == "open"
