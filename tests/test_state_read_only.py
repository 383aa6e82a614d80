"""A state store that turns read-only under a running process says so, on SQLite and PostgreSQL:
which database, that it became read-only, and what to check. Nothing half-written stays."""

from __future__ import annotations

import pytest
from state_fixtures import ReadOnlySwitch, db_url, make_link, read_only, store

from connector.errors import UnavailableError
from connector.state.store import StateStore

__all__ = ["db_url", "read_only", "store"]  # fixtures, imported for pytest


def test_a_store_that_becomes_read_only_says_so_naming_the_database_and_what_to_check(
    store: StateStore, read_only: ReadOnlySwitch
) -> None:
    store.cursors.set("orders", "a")
    read_only.on()

    with pytest.raises(UnavailableError) as err:
        store.links.save([make_link("001000000000000001")])

    message = str(err.value)
    assert message.startswith("the state store became read-only during the run"), message
    if store.dialect == "sqlite":
        assert str(store.db_path) in message
        assert "write access to the file, its -wal and -shm files and the folder" in message
    else:
        assert store.url in message
        assert "default_transaction_read_only" in message and "standby" in message
    assert "disk I/O error" not in message
    read_only.off()
    assert store.cursors.get("orders") == "a"
    assert store.links.get("default", "001000000000000001") is None


def test_a_store_opened_read_only_says_it_is_read_only(
    db_url: str, read_only: ReadOnlySwitch
) -> None:
    StateStore.open(db_url).close()  # migrated earlier
    read_only.on()

    with (
        StateStore.open(db_url, auto_migrate=False) as store,
        pytest.raises(UnavailableError, match=r"^the state store is read-only: "),
    ):
        store.runs.start("sync", dry_run=False)
