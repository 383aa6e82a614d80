"""The connection to Stripe drops during a create, before Stripe applied it or after (the
customer exists, the answer never arrived): never a second customer, and the link is saved by
the next run at the latest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import BILLED
from fault_readback import STRIPE_CREATE, assert_one_customer_each, read_store, record_exchanges

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair

ACME = "001000000000A01AAA"  # the first billed account the engine handles (orders are read by Id)


def _retries(make_config: Callable[..., Any], sandboxes: SandboxPair, n: int) -> Any:
    return make_config(
        billing={
            "accounts": [
                {"id": "default", "api_base": sandboxes.stripe.url, "max_network_retries": n}
            ]
        }
    )


@pytest.mark.parametrize("drop", ["before", "after"])
def test_a_dropped_create_is_resent_with_its_key_and_makes_one_customer(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
    drop: str,
) -> None:
    fault = sandboxes.stripe.inject_fault(method="POST", path=STRIPE_CREATE, drop=drop, count=1)
    seen = record_exchanges(sandboxes.stripe)

    report = run_sync("sync", config=_retries(make_config, sandboxes, 2))

    assert fault.hits == 1
    assert report.exit_code == 0 and report.failed == 0 and report.created == 3
    creates = [e for e in seen if e.method == "POST" and e.path == "/v1/customers"]
    # Creates go out concurrently: find the dropped one wherever it is in the answer order.
    (dropped,) = [e for e in creates if e.status is None]
    assert any(e.status == 200 and e.idempotency_key == dropped.idempotency_key for e in creates)
    if drop == "after":
        assert (
            sandboxes.stripe.stats()["idempotent_replays"] == 1
        )  # Stripe answered with the first customer
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not view.intents and not view.retries


@pytest.mark.parametrize("drop", ["before", "after"])
def test_without_client_retries_the_next_run_completes_the_create_once(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
    drop: str,
) -> None:
    cfg = _retries(make_config, sandboxes, 0)
    sandboxes.stripe.inject_fault(method="POST", path=STRIPE_CREATE, drop=drop, count=1)

    first = run_sync("sync", config=cfg)

    assert first.exit_code == 1 and first.failed == 1 and first.created == 2
    by_account = {c["metadata"]["salesforce_account_id"] for c in sandboxes.stripe.customers()}
    assert (ACME in by_account) is (drop == "after")  # applied, or not, as the fault says
    view = read_store(db_url)
    failed = view.outcome(first.run_id, ACME)
    assert failed.outcome == "failed" and failed.error_code == "connection"
    assert ACME not in view.links and ACME in view.retries
    # The create's intent (its key and exact payload) survives for the next run.
    assert ACME in view.intents

    second = run_sync("sync", config=cfg, retry_all=True)

    assert second.exit_code == 0 and second.failed == 0 and second.created == 1
    customers = assert_one_customer_each(sandboxes, BILLED)
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.intents and not after.retries
    if drop == "after":
        assert sandboxes.stripe.stats()["idempotent_replays"] == 1
