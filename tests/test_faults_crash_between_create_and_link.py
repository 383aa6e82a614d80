"""A crash after Stripe created the customer and before the link was saved.

The crash is rebuilt exactly as the engine leaves it (`billing_targets.crash_after_create`): the
intent recorded in the store (account, billing account, idempotency key, exact payload, as
`_Run._create` records it), and the create sent to the Stripe sandbox with that key through the
port's real `stripe.StripeClient`, its answer lost.
A recent intent is replayed with its key (Stripe answers with the same customer); one older
than Stripe's idempotency window is reconciled by searching metadata.salesforce_account_id
and linking what is found, never by creating a second customer. The replay and the stale
intent run for every billing system in test_engine_on_every_target.py; the search and the
admin's repair are Stripe's, here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from billing_targets import crash_after_create
from conftest import BILLED
from fault_readback import assert_one_customer_each, cli, read_store

from connector.app import build_targets
from connector.billing.base import BillingTarget
from connector.billing.stripe import RULES
from connector.config import Config, SecretSource
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

IDEMPOTENCY_WINDOW = RULES.idempotency_window

INITECH = "001000000000A02AAA"


@pytest.fixture
def stripe_port(make_config: Callable[..., Config], secrets: SecretSource) -> BillingTarget:
    [port] = build_targets(make_config(), secrets)
    return port


def test_an_intent_older_than_the_idempotency_window_is_reconciled_by_search_not_recreated(
    sandboxes: SandboxPair,
    stripe_port: BillingTarget,
    run_sync: Callable[..., RunReport],
    db_url: str,
) -> None:
    _, made = crash_after_create(
        stripe_port, run_sync, db_url, INITECH, intent_age=IDEMPOTENCY_WINDOW + timedelta(hours=1)
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
    sandboxes: SandboxPair,
    stripe_port: BillingTarget,
    run_sync: Callable[..., RunReport],
    db_url: str,
    cli_env: dict[str, str],
) -> None:
    _, made = crash_after_create(stripe_port, run_sync, db_url, INITECH)
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
