"""A database the store cannot use gives UnavailableError naming the file or server, never a hang:
a SQLite file that is locked, read-only, full, missing or not a database; an unreachable server."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from state_fixtures import make_link, sqlite_url

from connector.errors import UnavailableError
from connector.state.store import StateStore


def test_a_locked_database_fails_fast_with_the_file_named(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    path = tmp_path / "state.db"
    with StateStore.open(url, busy_timeout=0.2) as store:
        store.cursors.set("orders", "a")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="is locked by another process") as err:
                store.cursors.set("orders", "b")
            assert time.monotonic() - started < 3
            assert str(path) in str(err.value)
            # WAL: readers (the status command) are not blocked by the writer
            assert store.cursors.get("orders") == "a"
            with pytest.raises(UnavailableError, match=str(path)):
                StateStore.open(url, busy_timeout=0.2)
        finally:
            other.rollback()
            other.close()
        store.cursors.set("orders", "b")
        assert store.cursors.get("orders") == "b"


def test_a_full_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with StateStore.open(sqlite_url(tmp_path)) as store:

        def cap_size(dbapi_conn: Any, _record: Any) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

        sa.event.listen(store._engine, "connect", cap_size)
        store._engine.dispose()
        big = {"notes": "x" * 50_000}
        with pytest.raises(UnavailableError, match="disk is full") as err:
            store.links.save([make_link(f"001{n:015d}", payload=big) for n in range(50)])
        assert str(tmp_path / "state.db") in str(err.value)


def test_a_missing_folder_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "state.db"
    with pytest.raises(UnavailableError, match=f"cannot open the state database {path}"):
        StateStore.open(f"sqlite:///{path}")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UnavailableError, match="is not a usable SQLite database"):
        StateStore.open(sqlite_url(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files anyway")
def test_a_read_only_database_names_the_file(tmp_path: Path) -> None:
    StateStore.open(sqlite_url(tmp_path)).close()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with (
            pytest.raises(UnavailableError, match="read-only"),
            StateStore.open(sqlite_url(tmp_path)) as store,
        ):
            store.cursors.set("orders", "a")
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize(
    ("sqlite_says", "we_say"),
    [
        ("database is locked", "is locked by another process (waited 5 s)"),
        ("attempt to write a readonly database", "became read-only during the run: SQLite cannot write"),
        ("database or disk is full", "cannot grow: the disk is full"),
        ("unable to open database file", "cannot open the state database"),
        ("file is not a database", "is not a usable SQLite database"),
        ("disk I/O error", "failed: disk I/O error"),
    ],
)
def test_each_sqlite_failure_gets_a_message_naming_the_file(
    tmp_path: Path, sqlite_says: str, we_say: str
) -> None:
    # The read-only case cannot be produced for real when the tests run as root.
    with StateStore.open(sqlite_url(tmp_path)) as store:
        exc = sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError(sqlite_says))
        message = store._db.unavailable_message(exc)
    assert we_say in message
    assert str(tmp_path / "state.db") in message


def test_an_unreachable_postgres_is_unavailable_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="unavailable") as err:
        StateStore.open("postgresql+psycopg://bc:s3cret@127.0.0.1:1/state?connect_timeout=2")
    assert "s3cret" not in str(err.value)
    assert "postgresql+psycopg://bc@127.0.0.1:1/state" in str(err.value)
    assert time.monotonic() - started < 5
