"""A runner whose lock is lost stops writing before another runner writes (issue 12).

The lock is lost mid-run, while a Stripe create is in flight: on PostgreSQL its session is
terminated from a second connection (`pg_terminate_backend`), on SQLite its lock file is
deleted. A second runner takes the lock at that moment. The first runner finishes nothing more:
no further billing call, no store write (links, outcomes, intents, cursor stay as they were when
the second runner got in); its run ends `interrupted` with exit 3, and the second runner's
sync leaves exactly one customer per account with every link saved.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import BILLED
from fault_readback import (
    STRIPE_CREATE,
    add_billed_accounts,
    assert_one_customer_each,
    on_request,
    read_store,
)
from state_fixtures import PG_CONNINFO

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.errors import LockLost
from connector.partitions import Partition
from connector.sandbox.run import SandboxPair
from connector.state.database import advisory_key
from connector.state.store import StateStore

LOCK = Partition("default").lock_name


def lock_backend_pid(db_url: str, name: str) -> int:
    """The PostgreSQL backend that holds the advisory lock `name` in this test's schema."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            key = advisory_key(conn, f"lock:{name}")
            pid = conn.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = :hi AND objid = :lo AND objsubid = 1"
                ),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(pid)


def terminate(pid: int) -> None:
    with psycopg.connect(PG_CONNINFO, autocommit=True) as admin:
        # Waits (up to 10 s) until the backend is gone, so its locks are free when this returns.
        assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)


def lose_lock(db_url: str) -> None:
    if db_url.startswith("postgresql"):
        terminate(lock_backend_pid(db_url, LOCK))
    else:
        path = Path(db_url.removeprefix("sqlite:///"))
        (path.parent / f"{path.name}.{LOCK}.lock").unlink()


def test_a_lost_lock_stops_the_runner_before_the_next_runner_writes(
    sandboxes: SandboxPair,
    make_config: Callable[..., Config],
    secrets: SecretSource,
    run_sync: Callable[..., RunReport],
    db_url: str,
) -> None:
    assert run_sync("sync").exit_code == 0
    new = add_billed_accounts(sandboxes.salesforce, 6)
    creates_before = sandboxes.stripe.requests["POST /v1/customers"]
    second_store = StateStore.open(db_url)
    takeover = ExitStack()
    seen: dict[str, Any] = {}

    def lose_and_take_over() -> None:
        # Runs in the Stripe sandbox when the first create arrives, before it is answered.
        lose_lock(db_url)
        takeover.enter_context(second_store.locks.hold(LOCK, holder="second-runner"))
        seen["store"] = read_store(db_url)
        seen["creates"] = sandboxes.stripe.requests["POST /v1/customers"]

    on_request(sandboxes.stripe, STRIPE_CREATE, lose_and_take_over, method="POST")
    # Two writes in flight at most: the lock is checked before each request is sent, so the
    # one sent beside the first may still arrive after the lock went; nothing later may.
    cfg = make_config(
        billing={"accounts": [{"id": "default", "api_base": sandboxes.stripe.url, "max_in_flight": 2}]}
    )
    try:
        with open_pipeline(cfg, secrets) as p:
            report = p.engine.run("sync")

        assert report.status == "interrupted" and report.exit_code == 3, report
        assert "lock" in (report.error or "")
        # Only the creates in flight when the lock went; nothing after them.
        assert seen["creates"] in (creates_before + 1, creates_before + 2)
        assert creates_before + 1 <= sandboxes.stripe.requests["POST /v1/customers"] <= creates_before + 2
        after = read_store(db_url)
        at_takeover = seen["store"]
        assert after.links == at_takeover.links
        assert after.intents == at_takeover.intents
        assert after.cursor == at_takeover.cursor
        assert after.outcomes[report.run_id] == at_takeover.outcomes[report.run_id]
        assert after.runs[0].run_id == report.run_id and after.runs[0].status == "interrupted"
    finally:
        takeover.close()
        second_store.close()

    # The next runner completes the interrupted create (its intent) and everything else.
    again = run_sync("sync")
    assert again.exit_code == 0, again
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    final = read_store(db_url)
    final.assert_links_match(customers)
    assert not final.intents


def test_a_lock_handle_notices_its_loss_and_its_release(db_url: str) -> None:
    with StateStore.open(db_url) as store, ExitStack() as stack:
        handle = stack.enter_context(store.locks.hold(LOCK, holder="runner"))
        handle.check()  # held: no error
        lose_lock(db_url)
        with pytest.raises(LockLost) as lost:
            handle.check()
        assert LOCK in str(lost.value)
        # Another store can take it now, and the first one's handle keeps saying it is lost.
        with (
            StateStore.open(db_url) as other,
            other.locks.hold(LOCK, holder="second"),
            pytest.raises(LockLost),
        ):
            handle.check()
    # Released by leaving the block: checking a released handle is an error too.
    with pytest.raises(LockLost):
        handle.check()


def test_a_replaced_lock_file_is_noticed(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore.open(db_url) as store, store.locks.hold(LOCK, holder="runner") as handle:
        path = store.locks.path(LOCK)
        assert path is not None
        path.unlink()
        path.write_text("{}")  # same name, another file
        with pytest.raises(LockLost) as lost:
            handle.check()
        assert "replaced" in str(lost.value)
