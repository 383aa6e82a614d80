"""Stripe answering 5xx: a transient one is retried by stripe-python with the same idempotency
key and leaves one customer; a persistent one fails the record into the retry list, and the
next run completes it without a duplicate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import BILLED
from fault_readback import (
    STRIPE_CREATE,
    assert_one_customer_each,
    customers_by_account,
    opened,
    read_store,
    record_exchanges,
)

from connector.engine import RunReport
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import api_error_body

ACME = "001000000000A01AAA"  # the first billed account the engine handles (orders are read by Id)


def _retries(make_config: Callable[..., Any], sandboxes: SandboxPair, n: int) -> Any:
    return make_config(
        billing={
            "accounts": [
                {"id": "default", "api_base": sandboxes.stripe.url, "max_network_retries": n}
            ]
        }
    )


def test_a_transient_500_is_retried_with_the_same_key_and_leaves_one_customer(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    fault = sandboxes.stripe.inject_fault(
        status=500, body=api_error_body(), method="POST", path=STRIPE_CREATE, count=1
    )
    seen = record_exchanges(sandboxes.stripe)

    report = run_sync("sync")

    assert fault.hits == 1
    assert report.exit_code == 0 and report.failed == 0 and report.created == 3
    creates = [e for e in seen if e.method == "POST" and e.path == "/v1/customers"]
    # Creates go out concurrently: the refused one is found by its status, not its place.
    assert sorted(e.status or 0 for e in creates) == [200, 200, 200, 500]
    (refused,) = [e for e in creates if e.status == 500]
    assert refused.idempotency_key
    assert [e.status for e in creates if e.idempotency_key == refused.idempotency_key] == [500, 200]
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert view.cursor is not None and not view.retries and not view.intents


def test_a_persistent_5xx_fails_the_record_and_the_next_run_completes_it_once(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
) -> None:
    cfg = _retries(make_config, sandboxes, 1)
    # The first create and stripe-python's one retry both get 503: longer than the client waits.
    fault = sandboxes.stripe.inject_fault(
        status=503,
        body=api_error_body("Service unavailable"),
        method="POST",
        path=STRIPE_CREATE,
        body_contains=ACME,  # aimed at one record: the creates go out concurrently
        count=2,
    )

    first = run_sync("sync", config=cfg)

    assert fault.hits == 2
    assert first.exit_code == 1 and first.failed == 1 and first.created == 2
    customers = assert_one_customer_each(sandboxes, BILLED - {ACME})
    view = read_store(db_url)
    failed = view.outcome(first.run_id, ACME)
    assert (
        failed.outcome == "failed"
        and failed.error_code == "api_error"
        and "503" in (failed.error_message or "")
    )
    assert ACME in view.retries and ACME not in view.links
    view.assert_links_match(customers)
    assert view.cursor is not None

    second = run_sync("sync", config=cfg, retry_all=True)

    assert second.exit_code == 0 and second.failed == 0 and second.created == 1
    customers = assert_one_customer_each(sandboxes, BILLED)
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.retries and not after.intents


def test_a_failed_record_waits_for_its_backoff_and_is_then_retried_by_a_plain_sync(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
) -> None:
    # No overlap: after the first run, ACME's order is older than the cursor and is not read
    # again by the incremental query; only the retry list brings it back.
    cfg = make_config(
        salesforce={"overlap_seconds": 0},
        billing={
            "accounts": [
                {"id": "default", "api_base": sandboxes.stripe.url, "max_network_retries": 0}
            ]
        },
    )
    sandboxes.stripe.inject_fault(
        status=503,
        body=api_error_body("Service unavailable"),
        method="POST",
        path=STRIPE_CREATE,
        count=1,
    )
    first = run_sync("sync", config=cfg)
    assert first.failed == 1
    retry = read_store(db_url).retries[ACME]
    assert retry.attempts == 1 and retry.next_attempt_at > datetime.now(UTC)

    early = run_sync("sync", config=cfg)

    assert early.created == 0 and early.failed == 0
    assert ACME not in customers_by_account(sandboxes)
    assert read_store(db_url).retries[ACME].attempts == 1  # not due yet: not tried

    with opened(db_url) as store:  # the backoff has passed
        store.retries.schedule(
            "default", {ACME: "api_error: 503"}, now=datetime.now(UTC) - timedelta(hours=1)
        )
    due = run_sync("sync", config=cfg)

    assert due.exit_code == 0 and due.created == 1
    customers = assert_one_customer_each(sandboxes, BILLED)
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.retries and not after.intents
