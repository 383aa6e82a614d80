"""The run stops, rather than failing record after record, when it must: a billing account that
cannot be reached at all (exit 3, naming the account and URL, nothing marked failed, cursor
unmoved), and a runner lock lost mid-run (`before_write` raises LockLost: the run ends
interrupted, exit 3, what was applied recorded, cursor unmoved)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import ORDERS_CURSOR, RunReport
from connector.errors import LockLost
from connector.sandbox.run import SandboxPair
from connector.state.store import StateStore


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here once the socket is closed


def add_accounts(sandboxes: SandboxPair, n: int) -> list[str]:
    ids = []
    for i in range(n):
        acc = sandboxes.salesforce.create("Account", {"Name": f"New {i}", "BillingCountry": "France"})
        order = sandboxes.salesforce.create("Order", {"AccountId": acc, "Status": "Draft", "EffectiveDate": "2026-04-01"})
        sandboxes.salesforce.update("Order", order, {"Status": "Activated"})
        ids.append(acc)
    return ids


def test_an_unreachable_billing_account_stops_the_run_with_exit_3_and_fails_no_record(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    add_accounts(sandboxes, 10)
    url = closed_port()
    cfg = make_config(billing={"accounts": [{"id": "default", "api_base": url, "max_network_retries": 0}]})

    with open_pipeline(cfg, secrets) as p:
        report = p.engine.run("backfill")

    assert report.exit_code == 3 and report.status == "failed"
    assert "'default'" in (report.error or "") and url in (report.error or "")
    assert "support" not in (report.error or "").lower()
    assert report.failed == 0  # the records are not to blame
    store = StateStore.open(db_url)
    try:
        assert store.cursors.get(ORDERS_CURSOR) is None
        assert store.runs.outcomes_for_run(report.run_id) == []
        assert store.retries.all("default") == []
    finally:
        store.close()


class LoseLockAfter:
    """A runner-lock check that finds the lock gone after `n` checks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls > self.n:
            raise LockLost("the runner lock's database session ended; another runner may hold it")


def run_with_hook(cfg: Config, secrets: SecretSource, hook: Any, mode: str = "backfill") -> RunReport:
    with open_pipeline(cfg, secrets) as p:
        p.engine.before_write = hook
        return p.engine.run(mode)  # type: ignore[arg-type]


def test_a_lost_lock_ends_the_run_interrupted_before_its_next_write_with_what_was_done_recorded(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str,
    run_sync: Callable[..., RunReport],
) -> None:
    add_accounts(sandboxes, 6)
    cfg = make_config()
    hook = LoseLockAfter(4)

    report = run_with_hook(cfg, secrets, hook)

    assert report.status == "interrupted" and report.exit_code == 3
    assert "lock" in (report.error or "")
    made = {c["metadata"]["salesforce_account_id"]: c["id"] for c in sandboxes.stripe.customers()}
    # No write after the check that failed: the writes made are the checks that passed, less
    # the one for the intents written ahead.
    assert 0 < len(made) < 9
    assert sandboxes.stripe.write_count == len(made)
    store = StateStore.open(db_url)
    try:
        assert store.cursors.get(ORDERS_CURSOR) is None
        links = store.links.get_many("default", list(made))
        assert {a: ln.customer_id for a, ln in links.items()} == made  # nothing it made is lost
        assert store.runs.get(report.run_id).status == "interrupted"  # type: ignore[union-attr]
    finally:
        store.close()
    # The next runner finishes the job without a duplicate.
    after = run_sync("sync")
    assert after.exit_code == 0
    owners = [c["metadata"]["salesforce_account_id"] for c in sandboxes.stripe.customers()]
    assert len(owners) == len(set(owners)) == 9
