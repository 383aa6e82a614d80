"""`Database.insert_many` stores exactly what SQLAlchemy's own executemany stores.

On SQLite it sends tuples to the driver through the column types' bind processors; a value the
fast path converted differently (a JSON None, a boolean, an aware datetime) would differ here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from state_fixtures import T0, sqlite_url

from connector.state import schema as t
from connector.state.store import StateStore

ROWS: list[dict[str, Any]] = [
    {
        "billing_account": "default",
        "account_id": f"001000000000000A{i:02d}",
        "customer_id": f"cus_{i}",
        "status": "active",
        "payload_hash": None if i else "h",
        "payload": None if i == 1 else {"name": f"N{i}", "metadata": {"k": i}},
        "mapping_fingerprint": "fp",
        "basis_order_id": None,
        "basis_order_activated_at": None,
        "writeback_pending": bool(i % 2),
        "first_synced_at": T0,
        "last_synced_at": T0,
        "shared_from": None,
    }
    for i in range(3)
]


def _stored(url: str, fast: bool) -> list[tuple[Any, ...]]:
    s = StateStore.open(url)
    try:
        db = s.links._db
        stmt = db.upsert(t.links, ("billing_account", "account_id"), ("customer_id",))
        with db.connect(write=True) as conn:
            if fast:
                db.insert_many(conn, stmt, ROWS)
            else:
                conn.execute(stmt, ROWS)
        with db.connect() as conn:
            # The raw stored values, not decoded by the column types.
            return list(conn.exec_driver_sql("SELECT * FROM links ORDER BY account_id"))
    finally:
        s.close()


def test_insert_many_stores_what_executemany_stores(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fast = _stored(sqlite_url(tmp_path / "a"), fast=True)
    assert fast == _stored(sqlite_url(tmp_path / "b"), fast=False)
    assert len(fast) == 3


def test_a_statement_with_a_python_default_takes_sqlalchemy_path(tmp_path: Path) -> None:
    table = sa.Table(
        "with_default",
        sa.MetaData(),
        sa.Column("k", sa.String, primary_key=True),
        sa.Column("v", sa.String, default="filled"),
    )
    s = StateStore.open(sqlite_url(tmp_path))
    try:
        db = s.links._db
        with db.connect(write=True) as conn:
            table.create(conn)
            db.insert_many(conn, table.insert(), [{"k": "a"}, {"k": "b"}])
            assert list(conn.execute(sa.select(table.c.v))) == [("filled",), ("filled",)]
    finally:
        s.close()


def test_get_many_on_sqlite_reads_links_as_sqlalchemy_does(tmp_path: Path) -> None:
    from datetime import timedelta

    from connector.state.links import _GET_MANY, link_record
    from connector.state.records import Link

    s = StateStore.open(sqlite_url(tmp_path))
    try:
        links = [
            Link(**{**row, "last_synced_at": T0 + timedelta(microseconds=7 * i)})  # type: ignore[arg-type]
            for i, row in enumerate(ROWS)
        ]
        s.links.save(links)
        ids = [link.account_id for link in links]
        with s.links._db.connect() as conn:
            expected = {
                r.account_id: link_record(r)
                for r in conn.execute(_GET_MANY, {"ba": "default", "ids": ids})
            }
        assert s.links.get_many("default", ids) == expected
        assert expected[ids[1]].payload is None and expected[ids[1]].writeback_pending is True
        assert expected[ids[2]].last_synced_at == T0 + timedelta(microseconds=14)
    finally:
        s.close()
