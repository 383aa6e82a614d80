"""A SQLite file that is locked, full, missing or not a database gives UnavailableError."""

from __future__ import annotations

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
        store.set_cursor("orders", "a")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="is locked by another process") as err:
                store.set_cursor("orders", "b")
            assert time.monotonic() - started < 3
            assert str(path) in str(err.value)
            # WAL: readers (the status command) are not blocked by the writer
            assert store.get_cursor("orders") == "a"
            with pytest.raises(UnavailableError, match=str(path)):
                StateStore.open(url, busy_timeout=0.2)
        finally:
            other.rollback()
            other.close()
        store.set_cursor("orders", "b")
        assert store.get_cursor("orders") == "b"


def test_a_full_database_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with StateStore.open(sqlite_url(tmp_path)) as store:

        def cap_size(dbapi_conn: Any, _record: Any) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

        sa.event.listen(store._engine, "connect", cap_size)
        store._engine.dispose()
        big = {"notes": "x" * 50_000}
        with pytest.raises(UnavailableError, match="disk is full") as err:
            store.save_links([make_link(f"001{n:015d}", payload=big) for n in range(50)])
        assert str(tmp_path / "state.db") in str(err.value)


def test_a_missing_folder_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "state.db"
    with pytest.raises(UnavailableError, match=f"cannot open the state database {path}"):
        StateStore.open(f"sqlite:///{path}")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UnavailableError, match="is not a usable SQLite database"):
        StateStore.open(sqlite_url(tmp_path))
