"""The state database cannot be written: locked by another connection's exclusive write
transaction, or full. The run stops with exit 3 and a message naming the file and the cause,
and nothing is sent to Stripe that the store could not record first. SQLite only: these are
SQLite's failure modes (PostgreSQL's are covered by the store's own tests)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import BILLED, MAPPINGS
from fault_readback import (
    SF_QUERY,
    STRIPE_CREATE,
    assert_one_customer_each,
    cli,
    on_request,
    read_store,
)

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.errors import UnavailableError
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore


@pytest.fixture
def sqlite_state(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    StateStore.open(url).close()  # migrated, as after an earlier run
    return path, url


class WriteLock:
    """Another process's exclusive write transaction on the SQLite file, from `take()` until
    `hold` seconds later: past the store's 5 s busy timeout, so the write in progress fails,
    and short enough that the run can still record how it ended."""

    def __init__(self, path: Path, hold: float = 6.0) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.hold = hold
        self.timer: threading.Timer | None = None

    def take(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        self.timer = threading.Timer(self.hold, self.release)
        self.timer.start()

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.join()
        self.release()
        self.conn.close()


def test_a_state_database_locked_mid_run_stops_with_exit_3_before_anything_reaches_stripe(
    sandboxes: SandboxPair, sqlite_state: tuple[Path, str], tmp_path: Path
) -> None:
    path, url = sqlite_state
    cfg = tmp_path / "config.yaml"
    cfg.write_text(sandboxes.config_snippet(state_url=url, mappings_dir=str(MAPPINGS)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "STRIPE_"))},
        **sandboxes.secrets(),
        "BILLING_CONNECTOR_CONFIG": str(cfg),
    }
    # Another process (a second runner, the sqlite3 shell) takes the write lock just as the
    # connector reads the orders: every record's intent must be written before its create.
    lock = WriteLock(path)
    on_request(sandboxes.salesforce, SF_QUERY, lock.take)
    try:
        result = cli("sync", env=env)
    finally:
        lock.close()

    assert result.returncode == 3, result.stderr
    assert "is locked by another process" in result.stderr and str(path) in result.stderr
    assert sandboxes.stripe.stats()["total"] == 0
    assert sandboxes.stripe.customers() == []
    assert read_store(url).runs[0].status == "failed"

    again = cli("sync", env=env)

    assert again.returncode == 0, again.stderr
    customers = assert_one_customer_each(sandboxes, BILLED)
    read_store(url).assert_links_match(customers)


def test_a_state_database_locked_between_create_and_link_loses_nothing_and_never_duplicates(
    sandboxes: SandboxPair, sqlite_state: tuple[Path, str]
) -> None:
    path, url = sqlite_state
    cfg = Config.model_validate(sandboxes.config_dict(state_url=url, mappings_dir=str(MAPPINGS)))
    secrets = SecretSource(sandboxes.secrets())
    # The lock is taken while Stripe applies the first create: the customer exists, its link
    # cannot be saved. Only the intent recorded before the create can prevent a second one.
    lock = WriteLock(path)
    on_request(sandboxes.stripe, STRIPE_CREATE, lock.take, method="POST")
    try:
        with open_pipeline(cfg, secrets) as p:
            report = p.engine.run("sync")
    finally:
        lock.close()

    assert report.exit_code == 3 and "locked" in (report.error or "")
    # The page's creates went out; the transaction that links them could not be written. Only
    # the intents recorded before the creates can prevent second customers.
    made = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    assert made
    view = read_store(url)
    assert all(a not in view.links and a in view.intents for a in made)
    assert view.cursor is None and view.runs[0].status == "failed"

    with open_pipeline(cfg, secrets) as p:
        again = p.engine.run("sync")

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED)
    assert all(customers[a] == cid for a, cid in made.items())
    after = read_store(url)
    after.assert_links_match(customers)
    assert not after.intents


@pytest.fixture
def capped_sqlite() -> Iterator[dict[str, int]]:
    """Every new SQLite connection may not grow its file past cap['pages'] (0: no cap)."""
    cap = {"pages": 0}

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if cap["pages"] and isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute(f"PRAGMA max_page_count = {cap['pages']}")

    sa.event.listen(sa.engine.Engine, "connect", on_connect)
    try:
        yield cap
    finally:
        sa.event.remove(sa.engine.Engine, "connect", on_connect)


def test_a_full_state_database_stops_with_exit_3_and_sends_nothing_to_stripe(
    sandboxes: SandboxPair, sqlite_state: tuple[Path, str], capped_sqlite: dict[str, int]
) -> None:
    path, url = sqlite_state
    with sqlite3.connect(path) as conn:
        capped_sqlite["pages"] = conn.execute("PRAGMA page_count").fetchone()[0] + 1
    # Fill what space is left with earlier runs, until the disk says no more.
    with pytest.raises(UnavailableError, match="disk is full"), StateStore.open(url) as filler:
        for _ in range(10_000):
            filler.runs.start("sync", dry_run=False)
    cfg = Config.model_validate(sandboxes.config_dict(state_url=url, mappings_dir=str(MAPPINGS)))
    secrets = SecretSource(sandboxes.secrets())

    with pytest.raises(UnavailableError) as err, open_pipeline(cfg, secrets) as p:
        p.engine.run("sync")

    assert "disk is full" in str(err.value) and str(path) in str(err.value)
    assert err.value.exit_code == 3
    assert sandboxes.stripe.stats()["total"] == 0

    capped_sqlite["pages"] = 0  # space freed
    with open_pipeline(cfg, secrets) as p:
        report = p.engine.run("sync")

    assert report.exit_code == 0
    customers = assert_one_customer_each(sandboxes, BILLED)
    read_store(url).assert_links_match(customers)


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted_by_the_next_run(
    sandboxes: SandboxPair, sqlite_state: tuple[Path, str]
) -> None:
    _, url = sqlite_state
    with StateStore.open(url) as store:
        dead = store.runs.start("sync", dry_run=False)  # its process was killed: never finished
    cfg = Config.model_validate(sandboxes.config_dict(state_url=url, mappings_dir=str(MAPPINGS)))

    with open_pipeline(cfg, SecretSource(sandboxes.secrets())) as p:
        report = p.engine.run("sync")

    assert report.exit_code == 0
    runs = {r.run_id: r for r in read_store(url).runs}
    assert runs[dead].status == "interrupted"
