"""The state database holds customer names, emails, phones and addresses: every file the store
creates (the database, SQLite's -wal, -shm and -journal files, the runner's lock file) is
readable by the service user only, whatever the umask. PostgreSQL keeps no file of ours: the
server owns its files, and the runner lock is an advisory lock."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from state_fixtures import make_link, sqlite_url

from connector.state.store import StateStore


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual default umask (022): files are world-readable unless created otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_its_wal_and_shm_and_the_lock_file_are_private(
    tmp_path: Path, permissive_umask: None
) -> None:
    with StateStore.open(sqlite_url(tmp_path)) as store, store.locks.hold(holder="test"):
        store.links.save([make_link("001000000000000001")])
        lock = store.locks.path()
        created = [tmp_path / "state.db", tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
        assert lock is not None
        for path in [*created, lock]:
            assert path.exists(), path
            assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"


def test_a_rollback_journal_is_private_too(tmp_path: Path, permissive_umask: None) -> None:
    StateStore.open(sqlite_url(tmp_path)).close()
    # A tool (or an older connector) that switched the file to a rollback journal: SQLite
    # creates the -journal during each write transaction.
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA journal_mode = PERSIST")  # keeps the -journal after the write
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE scratch (x)")  # any write that changes a page
        conn.execute("COMMIT")
    finally:
        conn.close()
    journal = tmp_path / "state.db-journal"
    assert journal.exists()
    assert _mode(journal) == 0o600


def test_an_existing_database_keeps_the_mode_its_admin_gave_it(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "state.db"
    StateStore.open(sqlite_url(tmp_path)).close()
    path.chmod(0o640)  # e.g. a backup group may read it

    StateStore.open(sqlite_url(tmp_path)).close()

    assert _mode(path) == 0o640


def test_the_demo_folder_is_private(tmp_path: Path, permissive_umask: None) -> None:
    from io import StringIO

    from rich.console import Console

    from connector.sandbox.run import run_demo

    folder = tmp_path / "demo"
    assert run_demo(folder, console=Console(file=StringIO())) in (0, 1)

    assert _mode(folder) == 0o700
    assert _mode(folder / "state.db") == 0o600
