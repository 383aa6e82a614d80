"""Fixtures for the state store tests: a fresh store on SQLite (a temp file) and on PostgreSQL.

Every PostgreSQL test gets its own schema (`bc_test_<random>`, reached through `search_path` in
the URL) in the `test` database, dropped afterwards, so parallel runs never see each other.
When no server answers the PostgreSQL cases skip with the reason; with CI=true they fail.
BC_TEST_PG_URL points them at another server.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import Pool

from connector.state.records import Link, OrderLink
from connector.state.store import StateStore

PG_URL = os.environ.get("BC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg = sa.make_url(PG_URL)
PG_CONNINFO = psycopg.conninfo.make_conninfo(
    host=_pg.host or "127.0.0.1",
    port=_pg.port or 5432,
    user=_pg.username or "postgres",
    password=_pg.password,
    dbname=_pg.database or "test",
)
PG_WHERE = f"{_pg.host or '127.0.0.1'}:{_pg.port or 5432}"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@functools.cache
def _postgres_problem() -> str | None:
    try:
        psycopg.connect(PG_CONNINFO, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    message = f"no PostgreSQL answers at {PG_WHERE} ({problem})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires the PostgreSQL tests to run", pytrace=False)
    pytest.skip(message)


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A store URL whose search_path is a fresh, empty schema; the schema is dropped after."""
    require_postgres()
    schema = f"bc_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_CONNINFO, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        # Dropped in the background while the next test runs; the executor's thread is joined
        # at interpreter exit, so nothing is left behind.
        _DROPPER.submit(_drop_schema, schema)


def _drop_schema(schema: str) -> None:
    with psycopg.connect(PG_CONNINFO, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


_DROPPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-schema")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with pg_schema_url() as url:
            yield url


@pytest.fixture
def store(db_url: str) -> Iterator[StateStore]:
    """A migrated store on each backend."""
    s = StateStore.open(db_url)
    try:
        yield s
    finally:
        s.close()


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_link(account_id: str, customer_id: str | None = None, **kw: object) -> Link:
    fields: dict[str, object] = {
        "billing_account": "default",
        "account_id": account_id,
        "customer_id": customer_id or f"cus_{account_id}",
        "payload_hash": "h1",
        "payload": {"name": f"Account {account_id}", "address": {"country": "DE"}},
        "mapping_fingerprint": "fp1",
        "basis_order_id": f"801{account_id[3:]}",
        "basis_order_activated_at": "2026-01-01T00:00:00Z",
    }
    fields.update(kw)
    return Link(**fields)  # type: ignore[arg-type]


def make_order(order_id: str, account_id: str, customer_id: str | None = None) -> OrderLink:
    return OrderLink(
        billing_account="default",
        order_id=order_id,
        account_id=account_id,
        customer_id=customer_id or f"cus_{account_id}",
    )


def account_id(n: int) -> str:
    """An 18-character Salesforce-looking Account Id."""
    return f"001{n:015d}"


class ReadOnlySwitch:
    """Makes every state database this process uses refuse writes from `on()` until `off()`.

    Each connection taken from a pool afterwards is switched by the database's own setting:
    SQLite's `PRAGMA query_only` (writes fail with SQLITE_READONLY, as for a file made
    read-only: the tests run as root, for whom chmod changes nothing) and PostgreSQL's
    `default_transaction_read_only` (as an admin's ALTER ROLE, or a failover to a standby).
    Connections already checked out keep going, as they would.
    """

    def __init__(self) -> None:
        self.active = False

    def on(self) -> None:
        self.active = True

    def off(self) -> None:
        self.active = False

    def _on_checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        setting = "on" if self.active else "off"
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute(f"PRAGMA query_only = {1 if self.active else 0}")
        else:
            dbapi_conn.execute(f"SET default_transaction_read_only = {setting}")
            dbapi_conn.commit()


@pytest.fixture
def read_only() -> Iterator[ReadOnlySwitch]:
    switch = ReadOnlySwitch()
    sa.event.listen(Pool, "checkout", switch._on_checkout)
    try:
        yield switch
    finally:
        sa.event.remove(Pool, "checkout", switch._on_checkout)
