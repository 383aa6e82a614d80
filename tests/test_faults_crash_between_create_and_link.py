"""A crash after Stripe created the customer and before the link was saved.

The crash is rebuilt exactly as the engine leaves it: the intent recorded in the store (account,
billing account, idempotency key, exact payload, as `_Run._create` records it), and the create
sent to the Stripe sandbox with that key through a real `stripe.StripeClient`, its answer lost.
A recent intent is replayed with its key (Stripe answers with the same customer); one older
than Stripe's idempotency window is reconciled by searching metadata.salesforce_account_id
and linking what is found, never by creating a second customer. The replay and the stale
intent run for every billing system in test_engine_on_every_target.py; the search and the
admin's repair are Stripe's, here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import stripe
from conftest import BILLED
from fault_readback import BA, assert_one_customer_each, cli, opened, read_store

from connector.billing.stripe import RULES, StripeTarget
from connector.engine import PlannedWrite, RunReport
from connector.planner import create_key
from connector.sandbox.run import SANDBOX_STRIPE_KEY, SandboxPair
from connector.state.records import Intent

IDEMPOTENCY_WINDOW = RULES.idempotency_window

INITECH = "001000000000A02AAA"


def crash_after_create(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    db_url: str,
    account_id: str,
    *,
    intent_age: timedelta = timedelta(0),
    send: bool = True,
) -> tuple[PlannedWrite, str | None]:
    """Leave the store and Stripe as a process killed right after its create was applied."""
    plan = {p.account_id: p for p in run_sync("sync", dry_run=True).plan}
    planned = plan[account_id]
    assert planned.action == "create"
    key = create_key(BA, account_id, planned.payload_hash)
    with opened(db_url) as store:
        store.intents.record(
            Intent(
                billing_account=BA,
                account_id=account_id,
                idempotency_key=key,
                payload_hash=planned.payload_hash,
                created_at=datetime.now(UTC) - intent_age,
                payload=dict(planned.payload),
            )
        )
    if not send:
        return planned, None
    client = stripe.StripeClient(SANDBOX_STRIPE_KEY, base_addresses={"api": sandboxes.stripe.url})
    customer = client.v1.customers.create(
        params=StripeTarget._params(planned.payload),  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )
    return planned, str(customer.id)


def test_an_intent_older_than_the_idempotency_window_is_reconciled_by_search_not_recreated(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    _, made = crash_after_create(
        sandboxes, run_sync, db_url, INITECH, intent_age=IDEMPOTENCY_WINDOW + timedelta(hours=1)
    )
    # Stripe has forgotten the key: replaying it now would create a second customer.
    assert sandboxes.stripe.expire_idempotency_keys() >= 1
    creates_before = sandboxes.stripe.operations["create"]

    report = run_sync("sync")

    assert report.exit_code == 0 and report.failed == 0
    assert sandboxes.stripe.operations["search"] >= 1
    assert sandboxes.stripe.operations["create"] == creates_before + 2
    customers = assert_one_customer_each(sandboxes, BILLED)
    assert customers[INITECH] == made
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not view.intents and not view.retries


def test_xref_link_repairing_an_interrupted_create_closes_its_intent(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str, cli_env: dict[str, str]
) -> None:
    _, made = crash_after_create(sandboxes, run_sync, db_url, INITECH)
    assert made is not None and INITECH in read_store(db_url).intents
    linked = cli("xref", "link", INITECH, made, "--by", "support@example.com", env=cli_env)
    status = cli("status", env=cli_env)

    assert linked.returncode == 0, linked.stderr
    view = read_store(db_url)
    assert view.links[INITECH].customer_id == made
    assert INITECH not in view.intents
    assert "open intents 0" in status.stdout, status.stdout
    report = run_sync("sync")
    assert report.exit_code == 0 and report.failed == 0
    customers = assert_one_customer_each(sandboxes, BILLED)
    assert customers[INITECH] == made
    read_store(db_url).assert_links_match(customers)
