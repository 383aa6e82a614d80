"""What the fault-injection tests share: reading back what the sandboxes and the store hold after
a run, shaping the org, and faults in the services' own error shapes.

Every fault test ends with the same questions (one customer per billed account? every link
saved? the cursor where it must be? the record's outcome?), so the answers are read here, the
same way each time, from the servers and a freshly opened store, never from the engine's report.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.engine import ORDERS_CURSOR
from connector.sandbox.http import Fault, Request
from connector.sandbox.run import SandboxPair
from connector.sandbox.salesforce import SalesforceSandbox
from connector.state.records import Link, Outcome, RetryItem, RunRecord
from connector.state.store import StateStore

BA = "default"
FIELD = "Stripe_Customer_Id__c"
# Paths the faults aim at.
STRIPE_CREATE = r"^/v1/customers$"
SF_QUERY = r"/services/data/v[\d.]+/query/?$"
# A nextRecordsUrl: /services/data/v62.0/query/01g...-200 (the locator starts with 01g).
SF_QUERY_MORE = r"/services/data/v[\d.]+/query/01g"
SF_COLLECTION = r"/services/data/v[\d.]+/composite/sobjects$"


def closed_port_url() -> str:
    """A loopback URL nothing listens on: the port was bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sf_errors(code: str, message: str) -> list[dict[str, Any]]:
    """A Salesforce REST error body: a JSON list of {message, errorCode}."""
    return [{"message": message, "errorCode": code}]


def customers_by_account(sandboxes: SandboxPair) -> dict[str, list[dict[str, Any]]]:
    """Live Stripe customers grouped by metadata.salesforce_account_id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in sandboxes.stripe.customers():
        out.setdefault((c.get("metadata") or {}).get("salesforce_account_id", "?"), []).append(c)
    return out


def assert_one_customer_each(sandboxes: SandboxPair, accounts: set[str]) -> dict[str, str]:
    """Exactly the given accounts have a customer, each exactly one; returns account -> customer."""
    by_account = customers_by_account(sandboxes)
    dupes = {k: [c["id"] for c in v] for k, v in by_account.items() if len(v) != 1}
    assert not dupes, f"duplicate customers: {dupes}"
    assert set(by_account) == accounts, (
        f"customers for {sorted(by_account)}, expected {sorted(accounts)}"
    )
    return {k: v[0]["id"] for k, v in by_account.items()}


@dataclass(frozen=True)
class StoreView:
    """The state store as a fresh process would read it after the run."""

    cursor: str | None
    links: dict[str, Link]
    retries: dict[str, RetryItem]
    intents: dict[str, Any]
    runs: list[RunRecord]  # newest first
    outcomes: dict[str, list[Outcome]]  # run_id -> outcomes recorded for it

    def outcome(self, run_id: str, account_id: str) -> Outcome:
        found = [o for o in self.outcomes.get(run_id, []) if o.account_id == account_id]
        assert found, (
            f"no outcome recorded for {account_id} in run {run_id}: {self.outcomes.get(run_id)}"
        )
        return found[-1]

    def assert_links_match(self, customers: dict[str, str]) -> None:
        """Every account with a customer is linked to exactly that customer."""
        for account_id, customer_id in customers.items():
            link = self.links.get(account_id)
            assert link is not None, f"no link for {account_id}"
            assert link.customer_id == customer_id, (account_id, link.customer_id, customer_id)


@contextmanager
def opened(db_url: str) -> Iterator[StateStore]:
    store = StateStore.open(db_url)
    try:
        yield store
    finally:
        store.close()


def read_store(db_url: str, billing_account: str = BA) -> StoreView:
    with opened(db_url) as store:
        runs = store.runs.recent(limit=50)
        return StoreView(
            cursor=store.cursors.get(ORDERS_CURSOR),
            links={ln.account_id: ln for ln in store.links.iter(billing_account)},
            retries={r.account_id: r for r in store.retries.all(billing_account)},
            intents={i.account_id: i for i in store.intents.open(billing_account)},
            runs=runs,
            outcomes={r.run_id: store.runs.outcomes_for_run(r.run_id) for r in runs},
        )


def add_billed_accounts(
    sf: SalesforceSandbox, accounts: int, *, orders_each: int = 1, name: str = "Fault Co"
) -> list[str]:
    """New accounts, each with `orders_each` activated orders, created one account at a time
    (so their SystemModstamps, and the query's order, follow creation)."""
    ids = []
    for n in range(accounts):
        acc = sf.create("Account", {"Name": f"{name} {n:03d}", "BillingCountry": "Germany"})
        for k in range(orders_each):
            sf.create(
                "Order",
                {
                    "AccountId": acc,
                    "Status": "Activated",
                    "EffectiveDate": f"2026-04-{1 + k % 28:02d}",
                },
            )
        ids.append(acc)
    return ids


class OnRequest(Fault):
    """Runs `action` once, when the first matching request arrives, before the server answers it.

    The request itself is not failed by this fault: it is answered as the server would answer
    it after `action` (e.g. 401 INVALID_SESSION_ID once the sessions are expired).
    """

    action: Callable[[], object] | None = None

    def matches(self, req: Request) -> bool:
        if super().matches(req) and self.action is not None and self.count > 0:
            self.count = 0  # once
            self.action()
        return False


def on_request(
    sandbox: Any, path: str, action: Callable[[], object], method: str = "GET"
) -> OnRequest:
    fault = OnRequest(count=1, path=path, method=method)
    fault.action = action
    sandbox.inject_fault(fault)
    return fault


def expire_sessions_on(sf: SalesforceSandbox, path: str, method: str = "GET") -> OnRequest:
    """Every Salesforce session expires when the first request to `path` arrives."""
    return on_request(sf, path, sf.expire_sessions, method)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def requests_seen(sandboxes: SandboxPair) -> int:
    return int(sandboxes.salesforce.stats()["total"]) + int(sandboxes.stripe.stats()["total"])


def config_file(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["BILLING_CONNECTOR_CONFIG"])


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    status: int | None  # None: the connection was dropped without an answer
    idempotency_key: str | None


def record_exchanges(sandbox: Any) -> list[Exchange]:
    """Spy on a sandbox: every API request, with the status it got and its Idempotency-Key.

    Wraps the server's request handler on this instance only; control calls are left out.
    """
    seen: list[Exchange] = []
    handle = sandbox._handle

    def spy(req: Request) -> Any:
        resp = handle(req)
        if not req.path.startswith("/_sandbox/"):
            seen.append(
                Exchange(
                    req.method,
                    req.path,
                    resp.status if resp is not None else None,
                    req.header("Idempotency-Key"),
                )
            )
        return resp

    sandbox._handle = spy
    return seen
