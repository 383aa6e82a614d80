"""The Salesforce session expires in the middle of paging (after the first page of orders).

With a static access token the connector cannot get a new one: the run stops with exit 3, the
cursor stays where it was, what the first page did is recorded, and a run with a fresh token
finishes the job without a duplicate. With a login flow (password, JWT bearer, client
credentials) the connector logs in again and the run completes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import BILLED
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fault_readback import (
    FIELD,
    SF_COLLECTION,
    SF_QUERY_MORE,
    add_billed_accounts,
    assert_one_customer_each,
    customers_by_account,
    expire_sessions_on,
    read_store,
    record_exchanges,
)

from connector.app import open_pipeline
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.sandbox.run import SANDBOX_STRIPE_KEY, SandboxPair

PAGE = 200
ACCOUNTS, ORDERS_EACH = 5, 50  # 250 new orders: two pages of 200, the last account on page two


def run(cfg: Config, secrets: SecretSource, mode: str = "sync", **kw: Any) -> RunReport:
    with open_pipeline(cfg, secrets) as p:
        return p.engine.run(mode, **kw)  # type: ignore[arg-type]


def two_pages_of_new_orders(sandboxes: SandboxPair) -> list[str]:
    return add_billed_accounts(
        sandboxes.salesforce, ACCOUNTS, orders_each=ORDERS_EACH, name="Paged Co"
    )


def test_an_expired_access_token_mid_paging_stops_with_exit_3_and_keeps_the_cursor(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    cfg = make_config(salesforce={"page_size": PAGE})
    run(cfg, secrets)
    before = read_store(db_url)
    assert before.cursor is not None
    new = two_pages_of_new_orders(sandboxes)
    expire_sessions_on(sandboxes.salesforce, SF_QUERY_MORE)

    report = run(cfg, secrets)

    assert report.exit_code == 3 and report.status == "failed"
    assert "SALESFORCE_ACCESS_TOKEN" in (report.error or "")
    view = read_store(db_url)
    assert view.cursor == before.cursor
    assert view.runs[0].run_id == report.run_id and view.runs[0].status == "failed"
    # The first page was applied and recorded: its accounts have their one customer and a link.
    done = set(customers_by_account(sandboxes)) - BILLED
    assert done and new[-1] not in done and done <= set(new)
    customers = assert_one_customer_each(sandboxes, BILLED | done)
    view.assert_links_match(customers)
    assert {o.account_id for o in view.outcomes[report.run_id] if o.outcome == "created"} == done

    # A fresh token (what the admin would set) finishes the job: the rest once, nothing twice.
    fresh = SecretSource(
        {
            "SALESFORCE_ACCESS_TOKEN": sandboxes.salesforce.issue_token(),
            "STRIPE_API_KEY": SANDBOX_STRIPE_KEY,
        }
    )
    again = run(cfg, fresh)

    assert again.exit_code == 0 and again.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert after.cursor is not None and after.cursor > before.cursor


def _login(kind: str, sandboxes: SandboxPair) -> tuple[dict[str, Any], dict[str, str]]:
    """Config and secrets for a login flow against the sandbox's OAuth token endpoint."""
    sf = sandboxes.salesforce
    user = next(iter(sf.users))
    if kind == "password":
        return (
            {"auth": "password", "username": user, "consumer_key": sf.consumer_key},
            {
                "SALESFORCE_PASSWORD": sf.users[user],
                "SALESFORCE_CONSUMER_SECRET": sf.consumer_secret,
            },
        )
    if kind == "client_credentials":
        return (
            {"auth": "client_credentials", "consumer_key": sf.consumer_key, "domain": "acme.my"},
            {"SALESFORCE_CONSUMER_SECRET": sf.consumer_secret},
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return (
        {"auth": "jwt", "username": user, "consumer_key": sf.consumer_key},
        {"SALESFORCE_PRIVATE_KEY": pem},
    )


@pytest.mark.parametrize("kind", ["password", "jwt", "client_credentials"])
def test_with_a_login_flow_an_expired_session_mid_paging_logs_in_again_and_completes(
    sandboxes: SandboxPair, make_config: Callable[..., Config], db_url: str, kind: str
) -> None:
    section, env = _login(kind, sandboxes)
    cfg = make_config(salesforce={"page_size": PAGE, **section})
    secrets = SecretSource({**env, "STRIPE_API_KEY": SANDBOX_STRIPE_KEY})
    run(cfg, secrets)
    before = read_store(db_url)
    new = two_pages_of_new_orders(sandboxes)
    expire_sessions_on(sandboxes.salesforce, SF_QUERY_MORE)
    seen = record_exchanges(sandboxes.salesforce)

    report = run(cfg, secrets)

    assert report.exit_code == 0 and report.status == "succeeded", report.error
    statuses = [(e.path.rsplit("/", 2)[-2:], e.status) for e in seen]
    refused = [i for i, e in enumerate(seen) if e.status == 401]
    logins = [i for i, e in enumerate(seen) if e.path == "/services/oauth2/token"]
    assert refused and any(i > refused[0] for i in logins), (
        statuses
    )  # logged in again after the 401
    customers = assert_one_customer_each(sandboxes, BILLED | set(new))
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert before.cursor is not None and view.cursor is not None and view.cursor > before.cursor


def test_an_expired_access_token_at_write_back_keeps_links_pending_for_the_next_run(
    sandboxes: SandboxPair, make_config: Callable[..., Config], secrets: SecretSource, db_url: str
) -> None:
    cfg = make_config()
    expire_sessions_on(sandboxes.salesforce, SF_COLLECTION, method="PATCH")

    report = run(cfg, secrets)

    assert report.exit_code == 3 and "SALESFORCE_ACCESS_TOKEN" in (report.error or "")
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert all(ln.writeback_pending for ln in view.links.values())
    assert view.cursor is None  # the run did not finish: everything is read again

    fresh = SecretSource(
        {
            "SALESFORCE_ACCESS_TOKEN": sandboxes.salesforce.issue_token(),
            "STRIPE_API_KEY": SANDBOX_STRIPE_KEY,
        }
    )
    again = run(cfg, fresh)

    assert again.exit_code == 0 and again.created == 0
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    after = read_store(db_url)
    assert not [a for a, ln in after.links.items() if ln.writeback_pending]
    for account_id, customer_id in customers.items():
        assert sandboxes.salesforce.get("Account", account_id)[FIELD] == customer_id  # type: ignore[index]
