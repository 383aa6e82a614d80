"""Stripe answering 429, as a rate cap (`rate_limit`) and as `lock_timeout`: while the target's
retries last nothing fails; when the 429s outlast them the record fails, goes to the retry list,
does not hold the cursor back for the others, and the next run creates exactly one customer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import BILLED
from fault_readback import STRIPE_CREATE, assert_one_customer_each, read_store, record_exchanges

from connector.billing import ratelimit
from connector.engine import RunReport
from connector.sandbox.run import SandboxPair
from connector.sandbox.stripe import rate_limit_body

ACME = "001000000000A01AAA"  # the first billed account the engine handles (orders are read by Id)


def test_a_rate_capped_stripe_account_slows_the_run_down_but_fails_nothing(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    # A strict cap of 3 requests a second against a connector configured for 20: Stripe's 429s
    # come from the sandbox's own bucket, not from a counted fault.
    sandboxes.stripe.set_rate_limit(3)

    report = run_sync("sync")

    assert sandboxes.stripe.rate_limited > 0, "the cap never bit; the test proves nothing"
    assert report.exit_code == 0 and report.failed == 0 and report.created == 3
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert view.cursor is not None and not view.retries and not view.intents


def test_injected_rate_limit_429s_are_retried_with_the_same_key(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    fault = sandboxes.stripe.inject_fault(
        status=429, body=rate_limit_body(), method="POST", path=STRIPE_CREATE, count=3
    )
    seen = record_exchanges(sandboxes.stripe)

    report = run_sync("sync")

    assert fault.hits == 3
    creates = [e for e in seen if e.method == "POST" and e.path == "/v1/customers"]
    refused = [e.idempotency_key for e in creates if e.status == 429]
    accepted = [e.idempotency_key for e in creates if e.status == 200]
    # Every refused create was sent again with its key, and only three keys were ever used.
    assert len(refused) == 3 and set(refused) <= set(accepted) and len(set(accepted)) == 3
    assert report.exit_code == 0 and report.failed == 0 and report.created == 3
    customers = assert_one_customer_each(sandboxes, BILLED)
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert not view.retries and view.cursor is not None


def test_lock_timeout_on_an_update_is_retried_until_it_goes_through(
    sandboxes: SandboxPair, run_sync: Callable[..., RunReport], db_url: str
) -> None:
    run_sync("sync")
    cursor_before = read_store(db_url).cursor
    customers = assert_one_customer_each(sandboxes, BILLED)
    sandboxes.salesforce.update("Account", ACME, {"Phone": "+1 217 555 0199"})
    # Four in a row: more than stripe-python's own retries (Stripe-Should-Retry: true) absorb,
    # so the target's 429 handling has to carry the rest.
    fault = sandboxes.stripe.inject_lock_timeout(
        count=4, method="POST", path=rf"^/v1/customers/{customers[ACME]}$"
    )

    report = run_sync("sync")

    assert fault.hits == 4
    assert report.exit_code == 0 and report.failed == 0 and report.updated == 1
    assert sandboxes.stripe.get_customer(customers[ACME])["phone"] == "+12175550199"  # type: ignore[index]
    assert assert_one_customer_each(sandboxes, BILLED) == customers
    view = read_store(db_url)
    view.assert_links_match(customers)
    assert view.cursor is not None and cursor_before is not None and view.cursor > cursor_before
    assert not view.retries


def test_429s_that_outlast_the_retries_fail_the_record_and_the_next_run_creates_it_once(
    sandboxes: SandboxPair,
    run_sync: Callable[..., RunReport],
    make_config: Callable[..., Any],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fewer target retries and a zero Retry-After keep the test fast; the behaviour is the same.
    monkeypatch.setattr(ratelimit, "RATE_LIMIT_RETRIES", 2)
    cfg = make_config(salesforce={"overlap_seconds": 0})
    fault = sandboxes.stripe.inject_fault(
        status=429,
        body=rate_limit_body(),
        headers={"Retry-After": "0"},
        method="POST",
        path=STRIPE_CREATE,
        body_contains=ACME,  # aimed at one record: the creates go out concurrently
        count=3,
    )

    first = run_sync("sync", config=cfg)

    assert fault.hits == 3
    assert first.exit_code == 1 and first.failed == 1 and first.created == 2
    customers = assert_one_customer_each(sandboxes, BILLED - {ACME})
    view = read_store(db_url)
    failed = view.outcome(first.run_id, ACME)
    assert failed.outcome == "failed" and failed.error_code == "rate_limit"
    assert ACME in view.retries and ACME not in view.links
    view.assert_links_match(customers)
    # The failure does not hold the cursor back for the two that were created.
    assert view.cursor is not None
    assert view.runs[0].status == "partial"

    # `sync --retry-failed`: the failed record is retried now, not after its backoff.
    second = run_sync("sync", config=cfg, retry_all=True)

    assert second.exit_code == 0 and second.failed == 0 and second.created == 1
    customers = assert_one_customer_each(sandboxes, BILLED)
    after = read_store(db_url)
    after.assert_links_match(customers)
    assert not after.retries and not after.intents
    assert after.cursor is not None and after.cursor >= view.cursor
