"""`store.cursors`: named cursors, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from state_fixtures import db_url, store

from connector.state.store import StateStore

__all__ = ["db_url", "store"]  # fixtures, imported for pytest


def test_cursors(store: StateStore) -> None:
    assert store.cursors.get("orders:default") is None
    store.cursors.set("orders:default", "2026-01-01T00:00:00Z")
    store.cursors.set("orders:default", "2026-01-02T00:00:00Z")
    assert store.cursors.get("orders:default") == "2026-01-02T00:00:00Z"


def test_cursors_are_kept_per_name_and_survive_reopening(db_url: str) -> None:
    with StateStore.open(db_url) as first:
        first.cursors.set("orders", "2026-01-01T00:00:00.000+0000")
        first.cursors.set("deletions", "2026-02-01T00:00:00.000+0000")
        first.cursors.set("backfill:-:-", "801000000000000042")
    with StateStore.open(db_url) as again:
        assert again.cursors.get("orders") == "2026-01-01T00:00:00.000+0000"
        assert again.cursors.get("deletions") == "2026-02-01T00:00:00.000+0000"
        assert again.cursors.get("backfill:-:-") == "801000000000000042"
        assert again.cursors.get("Orders") is None  # names are exact
        assert set(again.stats()["cursors"]) == {"orders", "deletions", "backfill:-:-"}


def test_a_cursor_set_in_a_rolled_back_transaction_does_not_move(store: StateStore) -> None:
    store.cursors.set("orders", "a")
    with pytest.raises(RuntimeError), store.transaction():
        store.cursors.set("orders", "b")
        raise RuntimeError("the page's records were not all recorded")
    assert store.cursors.get("orders") == "a"
